"""`alertdist archive-list`, `download` and `replay`: an archived night, offline and back in Kafka."""

from __future__ import annotations

import argparse
import sys
import time

from alertdist.cli import parsing
from alertdist.cli.progress import ProgressLine
from alertdist.nights.dates import format_night
from alertdist.settings import Settings

__all__ = ["register"]

SOURCE_HELP = (
    "a tarball (.tar.gz), a .parquet file, a Parquet dataset folder, or with --archived-night an "
    "archive root; local, s3://... or http(s)://..."
)


def _archive_list(args, settings: Settings) -> int:
    """List the nights at an archive location: a local folder, s3://bucket/prefix, or an HTTP(S) directory laid out
    like UW's public archive (tarballs + MD5SUMS; read from its index page, or from MD5SUMS when the server shows
    none). Exit 3 if there is none."""
    from alertdist.access.listing import open_location

    url = args.url or args.archive or settings.archive
    location = open_location(url, settings.storage_options)
    nights = location.nights()
    for night in nights:  # a partial archive (an aborted night) says so, from its manifest
        print(" ".join([night.describe(), *filter(None, (location.manifest(m).note() for m in night.manifests))]))
    print(f"{len(nights)} night(s) at {url}", file=sys.stderr)
    return 0 if nights else 3


def _download(args, settings: Settings) -> int:
    """Download a night's files into DIR under the same relative paths (DIR becomes an archive root itself). Each file
    is written as NAME.part, checked against MD5SUMS (md5) and the night's manifest (size, sha256), and only then
    renamed; a file that does not match is deleted. An interrupted download resumes where it stopped (HTTP Range,
    S3/local seek): run the same command again."""
    from alertdist.access import download_night

    if (args.night is None) == (args.archived_night is None):
        raise ValueError("name the night to download once: --archived-night YYYYMMDD")
    args.night = args.night or args.archived_night
    line = ProgressLine(f"downloading night {format_night(args.night)}", args.quiet)
    started: dict[str, float] = {}

    def show(path: str, done: int, total: int | None) -> None:
        t0 = started.setdefault(path, time.monotonic())
        rate = done / 1e6 / max(time.monotonic() - t0, 1e-6)
        size = f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB" if total else f"{done / 1e6:,.1f} MB"
        line.update(
            f"{path} {size} {rate:,.1f} MB/s",
            done / total if total else None,
            final=total is not None and done >= total,
        )

    report = download_night(
        args.night,
        args.archive or settings.archive,
        args.to,
        args.what,
        programmes=args.programmes,
        programme_names=dict(settings.programmes),
        survey=args.survey,
        storage_options=settings.storage_options,
        progress=show,
        require_checksum=not args.allow_unverified,
    )
    for f in report.files:
        how = (
            "already there"
            if f.already_there
            else (f"resumed from byte {f.resumed_from:,}" if f.resumed_from else "downloaded")
        )
        checked = ", ".join(f.checked) or "NOTHING (unverified)"
        print(f"{f.local}  {f.size:>14,} bytes  {how}; checked {checked}")
    print(
        f"night {format_night(report.night)}: {len(report.files)} file(s), {report.bytes_fetched / 1e6:,.1f} MB "
        "fetched in "
        f"{report.elapsed_s:.1f} s -> {report.folder}"
    )
    return 0


def _replay(args, settings: Settings) -> int:
    """Replay archived alerts into Kafka. --topic T: every alert into T (created if missing), value the archived packet
    unchanged (from Parquet: rebuilt with its schema version), key objectId. --night N: through the publisher into
    night N's programme topics, which is then closed, so it can be filtered and archived like a live night. Several
    sources are merged in candid order. With --speed the exposures are spaced by their jd, SPEED times faster than
    the real night. Each file is read once into a private spool and checked against its MD5SUMS line or manifest
    entry before anything is produced; a source with neither is refused unless --allow-unverified."""
    from alertdist.jobs.replay import ReplayRequest, replay
    from alertdist.kafka.signals import stop_on_signals

    request = ReplayRequest(
        tuple(args.sources),
        topic=args.topic,
        night=args.night,
        archived_night=args.archived_night,
        from_parquet=args.from_parquet,
        speed=None if args.as_fast_as_possible else args.speed,
        partitions=args.partitions,
        check_night=not args.any_night,
        reopen=args.reopen,
        allow_unverified=args.allow_unverified,
    )
    with stop_on_signals() as stop:
        done = replay(
            settings, request, progress=ProgressLine(f"replaying into {request.destination}", args.quiet), stop=stop
        )
    if done.topic_created:
        print(f"created topic {args.topic} ({args.partitions} partitions)", file=sys.stderr)
    for c in done.counts:
        print(c.summary())
    for name, reason in done.result.bad_members[:20]:
        print(f"bad member {name}: {reason}", file=sys.stderr)
    print(done.result.summary())
    return 0 if not done.result.stopped else 130


def register(sub: argparse._SubParsersAction) -> None:
    _register_listing(sub)
    _register_download(sub)
    _register_replay(sub)


def _register_listing(sub: argparse._SubParsersAction) -> None:
    about = "list the nights an archive location holds (folder, s3://, or UW-style HTTP directory)"
    listing = parsing.command(sub, "archive-list", _archive_list, about)
    listing.add_argument(
        "url", nargs="?", metavar="URL", help="e.g. https://ztf.uw.edu/alerts/public/ or s3://bucket/archive"
    )
    parsing.archive_option(
        listing, "the archive location, as URL (default $ALERTDIST_ARCHIVE_URL or .alertdist/archive)"
    )


def _register_download(sub: argparse._SubParsersAction) -> None:
    download = parsing.command(
        sub, "download", _download, "download a night's tarballs and/or Parquet, resumable and checksum-verified"
    )
    download.add_argument("night", nargs="?", metavar="NIGHT", type=parsing.night, help=argparse.SUPPRESS)
    parsing.term_option(download, "archived night", "the night to download", type=parsing.night)
    parsing.archive_option(
        download, "the archive location: folder, s3:// or http(s):// (default $ALERTDIST_ARCHIVE_URL)", "--from"
    )
    download.add_argument("--to", required=True, metavar="DIR", help="local folder to download into")
    parsing.format_option(download, "which files (default both)", several=True)
    parsing.term_option(
        download, "programmes", "only these programme ids", dest="programmes", type=parsing.programme_ids
    )
    download.add_argument("--survey", help="only this survey's files (when a location holds several)")
    download.add_argument(
        "--allow-unverified",
        action="store_true",
        help="download files the archive publishes no checksum for (default: refuse)",
    )
    parsing.quiet_option(download)


def _register_replay(sub: argparse._SubParsersAction) -> None:
    about = "publish an archived night into a topic, or into a night's programme topics"
    replay = parsing.command(sub, "replay", _replay, about, kafka=True)
    replay.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    where = replay.add_mutually_exclusive_group(required=True)
    where.add_argument("--topic", help="replay everything into this one topic")
    where.add_argument(
        "--night", metavar="YYYYMMDD", type=parsing.night, help="replay as this night (programme topics, then closed)"
    )
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, metavar="X", help="original cadence, X times faster (e.g. 60)")
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no pacing (the default)")
    replay.add_argument(
        "--archived-night", type=parsing.night, metavar="YYYYMMDD", help="of an archive root (default --night)"
    )
    parsing.format_option(replay, "from an archive root, read its tarballs (default) or its Parquet dataset")
    replay.add_argument("--partitions", type=int, default=14, help="partitions of topics it creates (default 14)")
    replay.add_argument("--reopen", action="store_true", help="with --night: replay into a night already closed")
    replay.add_argument(
        "--any-night", action="store_true", help="with --night: accept alerts whose jd lies in another night"
    )
    replay.add_argument(
        "--allow-unverified",
        action="store_true",
        help="replay sources with no checksum to verify them by (no MD5SUMS line, no manifest; default: refuse)",
    )
    parsing.quiet_option(replay)
