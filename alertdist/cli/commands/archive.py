"""`alertdist archive`: a closed night to Avro tarballs (UW layout), Parquet, a manifest and MD5SUMS."""

from __future__ import annotations

import argparse
import threading
import time

from alertdist.cli.progress import ProgressLine
from alertdist.runtime import tune_allocators
from alertdist.settings import Settings
from alertdist.archive import ArchiveOptions, archive_night
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import parse_night
from alertdist.nights.topics import TopicNaming

__all__ = ["register"]

DESCRIPTION = """\
Archive one closed night: read every programme topic up to the offsets recorded when the night closed,
drop duplicate candids, and write to DEST (a folder, or s3://bucket/prefix):

  <survey>_<programme>_<YYYYMMDD>.tar.gz   one Avro packet per member, <candid>.avro (UW's layout)
  MD5SUMS                                  md5 of every tarball, as UW publishes
  parquet/night=<YYYYMMDD>/programid=<N>/part-0.parquet
  manifests/<survey>_<YYYYMMDD>.json       offsets read, counts, schema versions, sizes and checksums

Writes are atomic and a re-run replaces the night's files with identical ones. Everything written is read
back and checked against the manifest and the Kafka offsets (skip with --no-verify).
S3: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION), ALERTDIST_S3_ENDPOINT_URL for a
non-AWS store.
"""


class _ProgressBar:
    """While one programme is written the next is read, so the progress line shows every stage under way
    (programme, stage, a bar, counts and rate); a finished stage gets a line of its own."""

    def __init__(self, quiet: bool) -> None:
        self.line = ProgressLine("archive", quiet)
        self.stages: dict[tuple[int, str], tuple[int, int, float]] = {}  # (programme, stage) -> done, total, start
        self.lock = threading.Lock()  # calls come from the reading threads too

    def __call__(self, programid: int, stage: str, done: int, total: int) -> None:
        with self.lock:
            now = time.monotonic()
            key = (programid, stage)
            started = self.stages[key][2] if key in self.stages else now
            self.stages[key] = (done, total, started)
            if done >= total:
                self.line(self._text(now, only=key), final=True)
                del self.stages[key]
            else:
                self.line(self._text(now))

    def _text(self, now: float, only: tuple[int, str] | None = None) -> str:
        parts = []
        for (programid, stage), (done, total, started) in self.stages.items():
            if only is not None and (programid, stage) != only:
                continue
            share = min(done / total, 1.0) if total else 1.0
            rate = f" ({done / (now - started):,.0f}/s)" if now - started >= 0.5 else ""
            verb = "reading" if stage == "read" else "writing"
            parts.append(f"programme {programid} {verb} [{'#' * int(share * 20):<20}] {done}/{total}{rate}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.stages:
            self.line(self._text(time.monotonic()), final=True)


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    tune_allocators()
    naming = TopicNaming(survey=settings.survey, programmes=dict(settings.programmes))
    night = parse_night(args.night)
    dest = args.dest or settings.archive
    options = ArchiveOptions(storage_options=settings.storage_options, work_dir=args.work_dir,
                             row_group_rows=args.row_group_rows, engine=args.engine)
    bar = _ProgressBar(args.quiet)
    stop = threading.Event()
    started = time.monotonic()
    try:
        with stop_on_signals(stop):
            manifest = archive_night(settings.bootstrap_servers, naming, night, dest, options,
                                     programmes=args.programmes, verify=not args.no_verify, stop=stop,
                                     progress=bar)
    finally:
        bar.close()
    elapsed = time.monotonic() - started
    totals = manifest.totals()
    for programme in manifest.programmes.values():
        for kind in ("tarball", "parquet"):
            f = programme.files[kind]
            print(f"{f['path']}  {f['size']:>12,} bytes  sha256 {f['sha256']}")
    print(f"night {manifest.night}: read {totals['read']}, written {totals['written']}, "
          f"duplicates {totals['duplicates']}, rejected {totals['rejected']} in {elapsed:.1f} s "
          f"({totals['read'] / max(elapsed, 1e-6):,.0f} alerts/s){'' if args.no_verify else ', verified'} -> {dest}")
    return 0


def _programmes(text: str) -> list[int]:
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--programmes takes programme ids like 1,2 (got {text!r})") from e


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="archive a closed night to Avro tarballs, Parquet and a manifest",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--night", required=True, help="the night to archive, YYYYMMDD (it must be closed)")
    p.add_argument("--dest", metavar="URL",
                   help="archive root: a folder or s3://bucket/prefix (default $ALERTDIST_ARCHIVE_URL or "
                        ".alertdist/archive)")
    p.add_argument("--programmes", type=_programmes, metavar="1,2,3",
                   help="programme ids to archive (default: every programme the night closed with)")
    p.add_argument("--work-dir", metavar="FOLDER",
                   help="local folder for the spool; needs free disk for one programme's night (default $TMPDIR)")
    p.add_argument("--row-group-rows", type=int, default=10_000, metavar="N",
                   help="Parquet row group size in alerts (also capped at 128 MB of packets; default 10000)")
    p.add_argument("--engine", choices=["auto", "datafusion", "fastavro"], default="auto",
                   help="Avro decoder for Parquet (default auto: DataFusion when installed)")
    p.add_argument("--no-verify", action="store_true", help="skip reading back and checking what was written")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_archive)
