"""`alertdist filter list|run|batch`: science filters on the live stream or on packets at rest."""

from __future__ import annotations

import argparse
from pathlib import Path
import datetime as dt
import sys
import threading
import time

from alertdist.cli.progress import ProgressLine
from alertdist.settings import Settings
from alertdist.filters import available_filters, load_filter
from alertdist.filters.batch import BatchResult, run_batch, write_table
from alertdist.filters.live import LiveOptions, LiveReport, run_live
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import night_date, parse_night, site_for_timezone
from alertdist.nights.topics import TopicNaming

__all__ = ["register"]

FILTER_HELP = "a bundled filter (see `alertdist filter list`) or your own as package.module:function"


def _list(args, settings: Settings) -> int:
    for name, spec in sorted(available_filters().items()):
        described = load_filter(name).description.splitlines()
        print(f"{name:20s} reads {', '.join(spec.fields) if spec.fields else 'every field'}")
        print(f"{'':20s} {described[0] if described else ''}")
    return 0


def _programmes(text: str | None, settings: Settings) -> list[int]:
    if not text:
        return sorted(settings.programmes)
    try:
        wanted = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError as e:
        raise ValueError(f"--programmes {text!r} is not a list of programme ids like 1,2") from e
    unknown = [p for p in wanted if p not in settings.programmes]
    if unknown:
        raise ValueError(f"programme(s) {unknown} unknown; this survey has {sorted(settings.programmes)}")
    return wanted


def _run(args, settings: Settings) -> int:
    night = parse_night(args.night) if args.night else night_date(
        dt.datetime.now(dt.timezone.utc), site_for_timezone(settings.site_timezone))
    naming = TopicNaming(survey=settings.survey, programmes=dict(settings.programmes))
    options = LiveOptions(batch_size=args.batch_size, error_threshold=args.error_threshold)
    line = ProgressLine(f"filter {args.filter} night {night:%Y%m%d} copy {args.copy_index}")

    def show(r: LiveReport) -> None:
        lag = "?" if r.lag is None else r.lag
        line(f"{r.status}: read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, group lag {lag}, "
             f"{len(r.partitions)} partition(s), {r.rate:.0f} alerts/s")

    stop = threading.Event()
    with stop_on_signals(stop):
        report = run_live(args.filter, night, bootstrap_servers=settings.bootstrap_servers, naming=naming,
                          programmes=_programmes(args.programmes, settings), copy_index=args.copy_index,
                          stop=stop, progress=show, options=options)
    line(report.status, final=True)
    print(f"filter {report.filter_name}, night {report.night}, copy {report.copy_index} ({report.group_id}): "
          f"read {report.read}, passed {report.passed}, rejected {report.rejected}, errors {report.errors}, "
          f"malformed {report.malformed}; group lag {report.lag}; {report.elapsed_s:.1f} s; {report.status}")
    return 0


def _batch_input(args, settings: Settings):
    """A folder of packet files or one packet as is; anything archived (tarball, Parquet, archive root, s3://,
    https://) through the archive readers, which report bad members instead of stopping."""
    from alertdist.access.readers import packets_for_batch

    first = Path(args.sources[0])
    if len(args.sources) == 1 and (first.suffix == ".avro" or (first.is_dir() and any(first.glob("*.avro")))):
        return str(first), []
    return packets_for_batch(args.sources, archived_night=args.archived_night,
                             storage_options=settings.storage_options,
                             prefer="parquet" if args.from_parquet else "tarball")


def _batch(args, settings: Settings) -> int:
    line = ProgressLine(f"filter {args.filter} over {' '.join(args.sources)}")
    started = time.monotonic()
    packets, counts = _batch_input(args, settings)

    def show(r: BatchResult) -> None:
        rate = r.read / max(time.monotonic() - started, 1e-9)
        line(f"read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, {rate:.0f} alerts/s")

    result = run_batch(args.filter, packets, progress=show, progress_every=200)
    line("done", final=True)
    for c in counts:
        print(c.summary(), file=sys.stderr)
    for source, outcome, reason in result.problems[:20]:
        print(f"{outcome}: {source}: {reason}", file=sys.stderr)
    if len(result.problems) > 20:
        print(f"... and {len(result.problems) - 20} more", file=sys.stderr)
    if args.out:
        print(f"wrote {write_table(result.table, args.out)}")
    else:
        _print_table(result.table)
    print(f"filter {result.filter_name}: read {result.read}, passed {result.passed}, rejected {result.rejected}, "
          f"errors {result.errors}, malformed {result.malformed}")
    return 0


def _print_table(table, limit: int = 50) -> None:
    if not table.num_rows:
        print("(no alert passed)")
        return
    rows = [[str(v) for v in row.values()] for row in table.slice(0, limit).to_pylist()]
    widths = [max(len(name), *(len(r[i]) for r in rows)) for i, name in enumerate(table.column_names)]
    print("  ".join(name.ljust(w) for name, w in zip(table.column_names, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    if table.num_rows > limit:
        print(f"... {table.num_rows - limit} more rows (use --out to write them all)")


def register(sub: argparse._SubParsersAction) -> None:
    filters = sub.add_parser("filter", help="list filters, run one live on a night, or over packets at rest")
    actions = filters.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the bundled filters, the fields they read and what they select")
    listing.set_defaults(run=_list)

    run = actions.add_parser(
        "run", help="run one copy of a filter on a night's stream until the night is closed and consumed",
        description="Consume the night's programme topics as the filter's consumer group (start N copies with "
                    "--copy-index 0..N-1 to share the partitions), write each passing alert to "
                    "<topic>_<filter> and each alert the filter fails on to <survey>_<night>_<filter>_errors, "
                    "exactly once (Kafka transactions). Stops by itself once the night is closed and fully "
                    "consumed by the group, or on SIGTERM/SIGINT; run it again to resume where it stopped.")
    run.add_argument("filter", help=FILTER_HELP)
    run.add_argument("--night", metavar="YYYYMMDD", help="the night (default: tonight at the site)")
    run.add_argument("--programmes", metavar="1,2", help="programme ids this filter may see (default: all)")
    run.add_argument("--copy-index", type=int, default=0, metavar="I",
                     help="which copy this is, 0..N-1; a restart must reuse its index (default 0)")
    run.add_argument("--batch-size", type=int, default=500, help="alerts per transaction at most (default 500)")
    run.add_argument("--error-threshold", type=int, default=100,
                     help="stop after this many consecutive alerts the filter raised on (default 100)")
    run.set_defaults(run=_run)

    batch = actions.add_parser(
        "batch", help="run a filter over a folder of .avro packets, one packet, or a tarball",
        description="The same filter, the same answer as live: prints (or writes) a table of the passing "
                    "alerts with candid, objectId, programid and the filter's annotations.")
    batch.add_argument("filter", help=FILTER_HELP)
    batch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="a folder of <candid>.avro files, one .avro file, a .tar/.tar.gz, a .parquet file or "
                            "dataset, or an archive root (with --archived-night); local, s3:// or https://")
    batch.add_argument("--archived-night", metavar="YYYYMMDD", help="with an archive root as SOURCE: the night")
    batch.add_argument("--from-parquet", action="store_true", help="from an archive root, read its Parquet")
    batch.add_argument("--out", metavar="FILE", help="write the table to FILE.parquet or FILE.csv")
    batch.set_defaults(run=_batch)
