"""`alertdist filter list|run|batch`: science filters on the live stream or on packets at rest."""

from __future__ import annotations

import argparse
import os
import sys

from alertdist.cli import parsing
from alertdist.cli.commands.prefect_server import local_server
from alertdist.cli.progress import ProgressLine
from alertdist.filters import available_filters, load_filter
from alertdist.filters.live import LiveOptions
from alertdist.jobs.filters import filter_archived, run_filter
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import format_night
from alertdist.settings import Settings

__all__ = ["register"]

FILTER_HELP = "a bundled filter (see `alertdist filter list`) or your own as package.module:function"
LIVE_FILTER_HELP = (
    f"{FILTER_HELP} (NAME=package.module:function to run it as NAME, with the login filter_NAME); its code runs "
    "confined, with no login, no network and no access to the home"
)


def _list(args, settings: Settings) -> int:
    columnar = available_filters(columnar=True)
    for name, spec in sorted(available_filters().items()):
        described = load_filter(name).description.splitlines()
        twin = " (and a --columnar version)" if name in columnar else ""
        print(f"{name:20s} reads {', '.join(spec.fields) if spec.fields else 'every field'}{twin}")
        print(f"{'':20s} {described[0] if described else ''}")
    return 0


def _run(args, settings: Settings) -> int:
    """Consume the night's programme topics as the consumer group <survey>_filter_<filter>_<night> (start N copies
    with --copy-index 0..N-1 to share the partitions; copy I has transactional id <group>-I), write each passing
    alert to <topic>_<filter> and each alert the filter fails on to <survey>_<night>_<filter>_errors, exactly once
    (Kafka transactions). Stops by itself once the night is closed
    and fully consumed by the group, or on SIGTERM/SIGINT; run it again to resume where it stopped."""
    night = args.night or settings.tonight()
    line = ProgressLine(f"filter {args.filter} night {format_night(night)} copy {args.copy_index}", args.quiet)
    with stop_on_signals() as stop:
        report = run_filter(
            settings,
            args.filter,
            night,
            programmes=args.programmes,
            copy_index=args.copy_index,
            options=LiveOptions(
                batch_size=args.batch_size, error_threshold=args.error_threshold, batch_deadline_s=args.deadline
            ),
            progress=line,
            stop=stop,
            columnar=args.columnar,
        )
    print(
        f"filter {report.filter_name}, night {report.night}, copy {report.copy_index} ({report.group_id}): "
        f"read {report.read}, passed {report.passed}, rejected {report.rejected}, errors {report.errors}, "
        f"malformed {report.malformed}; group lag {report.lag}; {report.elapsed_s:.1f} s; {report.status}"
    )
    return 0


def _batch(args, settings: Settings) -> int:
    """The same filter, the same answer as live: prints (or writes) a table of the passing alerts with candid,
    objectId, programid and the filter's annotations. With --archived-nights, a reanalysis of the archive on Dask."""
    if args.nights:
        return _reanalyse(args, settings)
    if args.columnar or not args.sources:
        raise ValueError("give SOURCE files, or --archived-nights for a (columnar) reanalysis of the archive")
    done = filter_archived(
        settings,
        args.filter,
        args.sources,
        archived_night=args.archived_night,
        from_parquet=args.from_parquet,
        out=args.out,
        progress=ProgressLine(f"filter {args.filter} over {' '.join(args.sources)}", args.quiet),
    )
    result = done.result
    for c in done.counts:
        print(c.summary(), file=sys.stderr)
    for source, outcome, reason in result.problems[:20]:
        print(f"{outcome}: {source}: {reason}", file=sys.stderr)
    if len(result.problems) > 20:
        print(f"... and {len(result.problems) - 20} more", file=sys.stderr)
    if done.written:
        print(f"wrote {done.written}")
    else:
        _print_table(result.table)
    print(
        f"filter {result.filter_name}: read {result.read}, passed {result.passed}, rejected {result.rejected}, "
        f"errors {result.errors}, malformed {result.malformed}"
    )
    return 0


def _reanalyse(args, settings: Settings) -> int:
    """Runs the offline-filter flow over the nights: one task per night's Parquet file on Dask (a local cluster,
    or ALERTDIST_DASK_ADDRESS); its progress lines and the per-night counts are shown here and in the Prefect UI."""
    if not args.out or args.out.endswith((".parquet", ".csv")):
        raise ValueError("with --archived-nights, give --out FOLDER for the dataset of passes")
    server = local_server(settings)
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.update(server.client_env())  # Prefect's own client settings, before it is imported
    from alertdist.flows.offline_filter import offline_filter

    chosen = {name: getattr(args, name) for name in ("nights", "archive", "programmes", "columnar", "workers")}
    state = offline_filter(args.filter, args.out, **chosen, return_state=True)
    if not state.is_completed():
        print(f"\nThe reanalysis FAILED: {state.message}", file=sys.stderr)
        return 1
    summary = state.result()
    for night, counts in summary["nights"].items():
        print(f"{night}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"filter {args.filter}: read {summary['read']}, passed {summary['passed']}; passes in {summary['out']}")
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
    _register_run(actions)
    _register_batch(actions)


def _programmes_option(parser: argparse.ArgumentParser, help: str) -> None:
    parsing.term_option(parser, "programmes", help, dest="programmes", type=parsing.programme_ids)


def _register_run(actions) -> None:
    run = parsing.command(
        actions,
        "run",
        _run,
        "run one copy of a filter on a night's stream until the night is closed and consumed",
        kafka=True,
    )
    run.add_argument("filter", help=LIVE_FILTER_HELP)
    run.add_argument("--night", metavar="YYYYMMDD", type=parsing.night, help="the night (default: tonight at the site)")
    _programmes_option(run, "programme ids to read (default all)")
    run.add_argument(
        "--copy-index", type=int, default=0, metavar="I", help="this copy, 0..N-1; a restart reuses it (default 0)"
    )
    run.add_argument("--batch-size", type=int, default=500, help="alerts per transaction at most (default 500)")
    run.add_argument(
        "--error-threshold", type=int, default=100, help="stop after N alerts in a row raised on (default 100)"
    )
    run.add_argument(
        "--deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time the filter has to judge one batch (default 10): the alerts it has not judged by then are errors "
        "and its confined process is restarted; three such batches in a row stop the copy",
    )
    run.add_argument(
        "--columnar", action="store_true", help="the filter's columnar version, on each batch decoded to Arrow"
    )
    parsing.quiet_option(run)


def _register_batch(actions) -> None:
    batch = parsing.command(
        actions, "batch", _batch, "run a filter over a folder of .avro packets, one packet, or a tarball"
    )
    batch.add_argument("filter", help=FILTER_HELP)
    batch.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="a folder of <candid>.avro files, one .avro file, a .tar/.tar.gz, a .parquet file or "
        "dataset, or an archive root (with --archived-night); local, s3:// or https://",
    )
    batch.add_argument(
        "--archived-night", metavar="YYYYMMDD", type=parsing.night, help="with an archive root as SOURCE: the night"
    )
    parsing.format_option(batch, "from an archive root, read its tarballs (default) or its Parquet")
    batch.add_argument(
        "--out", metavar="FILE", help="write the table to FILE.parquet or FILE.csv (with --archived-nights: a FOLDER)"
    )
    parsing.term_option(
        batch,
        "archived nights",
        "reanalyse these nights of the archive on Dask: YYYYMMDD, FIRST..LAST, or comma lists",
        dest="nights",
        nargs="+",
    )
    parsing.archive_option(batch, "with --archived-nights: the archive root (default $ALERTDIST_ARCHIVE_URL)")
    _programmes_option(batch, "with --archived-nights: programme ids (default all)")
    batch.add_argument(
        "--columnar",
        action="store_true",
        help="with --archived-nights: the filter's columnar version, on the columns it reads",
    )
    batch.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --archived-nights: local Dask workers (default: ALERTDIST_DASK_WORKERS)",
    )
    parsing.quiet_option(batch)
