"""Run a filter: live on a night's stream (one copy of its consumer group), or over archived packets."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from alertdist.access.listing import ArchiveAccessError, check_sources, open_location
from alertdist.access.readers import ArchiveReadError, ReadCounts, packets_for_batch, parquet_alerts, read_columns
from alertdist.atomic import write_atomically
from alertdist.filters import FilterLookupError, load_filter, named_filter
from alertdist.filters.batch import BatchResult, passes_table, run_batch, run_columnar, write_table
from alertdist.filters.columnar import wanted_columns
from alertdist.filters.live import LiveOptions, LiveReport, confined_filter, run_live
from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.nights.dates import format_night
from alertdist.security import filter_service
from alertdist.settings import Settings

__all__ = [
    "COUNTS_FILE",
    "FilteredArchive",
    "Unit",
    "filter_archived",
    "filter_unit",
    "reanalysis_text",
    "reanalysis_units",
    "run_filter",
    "summarise_reanalysis",
]


def run_filter(
    settings: Settings,
    filter_name: str,
    night: dt.date,
    *,
    programmes: list[int] | None = None,
    copy_index: int = 0,
    options: LiveOptions = LiveOptions(),
    progress: Progress = NoProgress(),
    stop: threading.Event | None = None,
    columnar: bool = False,
) -> LiveReport:
    """One copy of ``filter_name`` (its columnar version if asked) on ``night`` until the night is closed and
    consumed (or ``stop``). ``filter_name``: a bundled filter, ``package.module:function``, or
    ``NAME=package.module:function`` (`named_filter`); its code runs confined (`alertdist.filters.confined`) and
    the copy logs in as ``filter_NAME``."""
    unknown = sorted(set(programmes or ()) - set(settings.programmes))
    if unknown:
        raise ValueError(f"programme(s) {unknown} unknown; this survey has {sorted(settings.programmes)}")
    serve_metrics(settings, "filter")

    def show(r: LiveReport) -> None:
        progress.update(
            f"{r.status}: read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, group lag "
            f"{'?' if r.lag is None else r.lag}, {len(r.partitions)} partition(s), {r.rate:.0f} alerts/s"
        )

    name, spec = named_filter(filter_name)
    confined = confined_filter(spec, options, columnar=columnar, copy_index=copy_index)
    if name is not None and confined.name != name:
        confined.close()
        raise FilterLookupError(
            f"plug-in {spec!r} declares the name {confined.name!r}, but was started as {name!r}: it runs only "
            f"under the name (and the login, {filter_service(name)}) it was started with; fix the name it declares "
            "or the one it is started as"
        )
    try:
        brokers = settings.kafka(filter_service(confined.name))  # the login of the name it was started as
    except BaseException:
        confined.close()
        raise
    report = run_live(
        confined,
        night,
        bootstrap_servers=brokers,
        naming=settings.naming,
        programmes=programmes or sorted(settings.programmes),
        copy_index=copy_index,
        stop=stop,
        progress=show,
        options=options,
        columnar=columnar,
    )
    progress.update(report.status, 1.0 if report.status == "finished" else None, final=True)  # done: 100 %
    return report


@dataclass
class FilteredArchive:
    result: BatchResult
    counts: list[ReadCounts]  # each archived source's good and bad members
    written: Path | None  # where the table went, when asked to write it


def filter_archived(
    settings: Settings,
    filter_name: str,
    sources: list[str],
    *,
    archived_night: dt.date | None = None,
    from_parquet: bool = False,
    out: str | None = None,
    progress: Progress = NoProgress(),
    progress_every: int = 200,
) -> FilteredArchive:
    """The same filter, the same answer as live, over packets at rest: a folder of ``.avro`` files or one packet
    as they are, anything archived (tarball, Parquet, archive root; local, s3://, https://) through the archive
    readers, which count bad members instead of stopping."""
    first = Path(sources[0])
    if len(sources) == 1 and (first.suffix == ".avro" or (first.is_dir() and any(first.glob("*.avro")))):
        packets, counts = str(first), []
    else:
        check_sources(sources, archived_night=archived_night, storage_options=settings.storage_options)
        packets, counts = packets_for_batch(
            sources,
            archived_night=archived_night,
            storage_options=settings.storage_options,
            prefer="parquet" if from_parquet else "tarball",
        )
    started = time.monotonic()

    def show(r: BatchResult) -> None:
        rate = r.read / max(time.monotonic() - started, 1e-9)
        progress.update(f"read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, {rate:.0f} alerts/s")

    result = run_batch(filter_name, packets, progress=show, progress_every=progress_every)
    progress.update(f"read {result.read}, passed {result.passed}", 1.0, final=True)  # every packet judged: 100 %
    return FilteredArchive(result, counts, write_table(result.table, out) if out else None)


# ------------------------------------------------------------------------------------ reanalysis over nights


@dataclass(frozen=True)
class Unit:
    """One unit of work of a reanalysis: one night's Parquet file of one programme."""

    night: dt.date
    programid: int
    location: str


def reanalysis_units(
    settings: Settings, nights: list[dt.date], *, archive: str | None = None, programmes: list[int] | None = None
) -> tuple[list[Unit], dict[str, str]]:
    """Each night's Parquet files in the archive (default: the settings' one), and the nights without any, with
    why: a missing night is reported, it does not stop the others."""
    location = open_location(archive or settings.archive, settings.storage_options)
    units, missing = [], {}
    for night in nights:
        label = format_night(night)
        try:
            files = [f for f in location.night_files(night) if f.kind == "parquet"]
        except ArchiveAccessError as e:
            missing[label] = str(e)
            continue
        if not files:
            missing[label] = f"night {label} has no Parquet file in {location.url}"
        for f in files:
            programid = int(_PROGRAMID.search(f.path)[1])
            if programmes is None or programid in programmes:
                units.append(Unit(night, programid, location.display(f.path)))
    return units, missing


_PROGRAMID = re.compile(r"programid=(\d+)")


def filter_unit(settings: Settings, filter_name: str, unit: Unit, out: str, *, columnar: bool) -> dict:
    """Filter one night's Parquet file and write its passes to ``out`` (atomically, so a retry replaces them).

    Columnar (asked for, or a ``module:function`` declared so): only the filter's columns are read. Per-alert:
    every row is rebuilt into its packet, byte for byte, and judged as live. Either way the same rows pass with
    the same annotations.
    """
    label = format_night(unit.night)
    bad = 0
    alert_filter = load_filter(filter_name, columnar=columnar)
    if alert_filter.columnar:
        table = read_columns(unit.location, wanted_columns(alert_filter), storage_options=settings.storage_options)
        result = run_columnar(alert_filter, table, source=unit.location)
    else:
        counts = ReadCounts(unit.location)
        alerts = parquet_alerts(unit.location, storage_options=settings.storage_options, counts=counts)
        try:
            result = run_batch(alert_filter, ((a.name, a.packet) for a in alerts))
        except pa.ArrowException as e:
            raise ArchiveReadError(f"reading {unit.location} failed: {e}; the file is damaged or incomplete") from e
        bad = counts.bad
    write_table(passes_table(result, label), Path(out) / f"passes-{label}-p{unit.programid}.parquet")
    return {
        "night": label,
        "programid": unit.programid,
        "read": result.read + bad,
        "passed": result.passed,
        "rejected": result.rejected,
        "errors": result.errors + result.malformed + bad,
        "problems": [list(p) for p in result.problems[:20]],
    }


COUNTS_FILE = "_counts.json"  # beside the passes; a leading _ keeps it out of the Parquet dataset


def summarise_reanalysis(out: str, rows: list[dict], failures: dict[str, str]) -> dict:
    """Counts per night (``read == passed + rejected + errors`` for every night that finished) and the nights that
    failed with why, written to ``out/_counts.json`` atomically; returns them."""
    nights: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["night"], r["programid"])):
        night = nights.setdefault(row["night"], {"units": 0, "read": 0, "passed": 0, "rejected": 0, "errors": 0})
        night["units"] += 1
        for key in ("read", "passed", "rejected", "errors"):
            night[key] += row[key]
    summary = {
        "nights": nights,
        "failed": dict(sorted(failures.items())),
        "read": sum(n["read"] for n in nights.values()),
        "passed": sum(n["passed"] for n in nights.values()),
        "out": str(out),
    }
    write_atomically(Path(out) / COUNTS_FILE, json.dumps(summary, indent=1).encode())
    return summary


def reanalysis_text(done: int, total: int, passed: int, failed: int, started: float) -> str:
    """One progress line of a reanalysis."""
    return f"{done}/{total} night files done, {passed} passed, {failed} failed, {time.monotonic() - started:.0f} s"
