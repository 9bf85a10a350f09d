"""`alertdist archive`: a closed night to Avro tarballs (UW layout), Parquet, a manifest and MD5SUMS."""

from __future__ import annotations

import argparse
import sys
import time

from alertdist.archive import ArchiveOptions
from alertdist.cli import parsing
from alertdist.cli.progress import ProgressLine
from alertdist.jobs.archive import archive_night
from alertdist.kafka.signals import stop_on_signals
from alertdist.settings import Settings

__all__ = ["register"]

DESCRIPTION = """\
Archive one closed night: read every programme topic up to the offsets recorded when the night closed,
drop duplicate candids, and write to --archive URL (a folder, or s3://bucket/prefix):

  <survey>_<programme>_<YYYYMMDD>.tar.gz   one Avro packet per member, <candid>.avro (UW's layout)
  MD5SUMS                                  md5 of every tarball, as UW publishes
  parquet/night=<YYYYMMDD>/programid=<N>/part-0.parquet
  manifests/<survey>_<YYYYMMDD>.json       offsets read, counts, schema versions, sizes and checksums

An aborted night (its publishing failed) is refused: it is not whole. --partial archives what was published,
and its manifest says "partial": true and "night_state": "aborted" (alertdist archive-list shows PARTIAL).

Writes are atomic and a re-run replaces the night's files with identical ones. Everything written is read
back and checked against the manifest and the Kafka offsets (skip with --no-verify).
S3: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION), ALERTDIST_S3_ENDPOINT_URL for a
non-AWS store.
"""


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    if args.what == "index":  # `alertdist archive index --night N`: backfill the service's indexes
        from alertdist.cli.commands.serve import index_command

        return index_command(args, settings)
    dest = args.archive or settings.archive
    options = ArchiveOptions(work_dir=args.work_dir, row_group_rows=args.row_group_rows, engine=args.engine)
    started = time.monotonic()
    with stop_on_signals() as stop:
        manifest = archive_night(
            settings,
            args.night,
            dest=dest,
            programmes=args.programmes,
            options=options,
            verify=not args.no_verify,
            partial=args.partial,
            progress=ProgressLine("archive", args.quiet),
            stop=stop,
        )
    elapsed = time.monotonic() - started
    totals = manifest.totals()
    for programme in manifest.programmes.values():
        for kind in ("tarball", "parquet"):
            f = programme.files[kind]
            print(f"{f['path']}  {f['size']:>12,} bytes  sha256 {f['sha256']}")
    for programme in manifest.programmes.values():
        conflicting = programme.counts.get("conflicting_duplicates", 0)
        if conflicting:
            shown = ", ".join(str(d["candid"]) for d in programme.conflicting_duplicates[:5])
            print(
                f"WARNING: {programme.name}: {conflicting} duplicate candid(s) with DIFFERENT bytes (first "
                "kept, others "
                f"dropped): {shown}{' ...' if conflicting > 5 else ''}; see {manifest.path}",
                file=sys.stderr,
            )
    if manifest.partial:
        print(f"WARNING: night {manifest.night}: {manifest.note()}; see {manifest.path}", file=sys.stderr)
    print(
        f"night {manifest.night}: read {totals['read']}, written {totals['written']}, "
        f"duplicates {totals['duplicates']}, rejected {totals['rejected']} in {elapsed:.1f} s "
        f"({totals['read'] / max(elapsed, 1e-6):,.0f} alerts/s){'' if args.no_verify else ', verified'} -> {dest}"
    )
    return 0


class _NoKafkaForIndex(argparse.Action):
    """`archive index` reads the archive only: no broker needed."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.what = values
        if values == "index":
            namespace.needs_kafka = False


def register(sub: argparse._SubParsersAction) -> None:
    help = "archive a closed night to Avro tarballs, Parquet and a manifest"
    p = parsing.command(sub, "archive", _archive, help, description=DESCRIPTION, kafka=True)
    p.add_argument(
        "what", nargs="?", choices=["index"], action=_NoKafkaForIndex, help="index: (re)write the night's indexes"
    )
    p.add_argument(
        "--night", required=True, type=parsing.night, help="the night to archive, YYYYMMDD (it must be closed)"
    )
    parsing.archive_option(
        p,
        "archive root: a folder or s3://bucket/prefix (default $ALERTDIST_ARCHIVE_URL or .alertdist/archive)",
        "--dest",
    )
    parsing.term_option(
        p,
        "programmes",
        "programme ids to archive (default: every programme the night closed with)",
        dest="programmes",
        type=parsing.programme_ids,
    )
    p.add_argument(
        "--work-dir",
        metavar="FOLDER",
        help="local folder for the spool; needs free disk for one programme's night (default $TMPDIR)",
    )
    p.add_argument(
        "--row-group-rows",
        type=int,
        default=10_000,
        metavar="N",
        help="Parquet row group size in alerts (also capped at 128 MB of packets; default 10000)",
    )
    p.add_argument(
        "--engine",
        choices=["auto", "datafusion", "fastavro"],
        default="auto",
        help="Avro decoder for Parquet (default auto: DataFusion when installed)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reading back and checking what was written")
    p.add_argument(
        "--partial",
        action="store_true",
        help="archive an aborted night too (what was published before it failed), marked partial in its manifest",
    )
    parsing.quiet_option(p)
