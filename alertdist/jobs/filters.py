"""Run a filter: live on a night's stream (one copy of its consumer group), or over archived packets."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alertdist.access.listing import check_sources
from alertdist.access.readers import ReadCounts, packets_for_batch
from alertdist.filters.batch import BatchResult, run_batch, write_table
from alertdist.filters.live import LiveOptions, LiveReport, run_live
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.security import filter_service
from alertdist.settings import Settings

__all__ = ["FilteredArchive", "filter_archived", "run_filter"]


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
) -> LiveReport:
    """One copy of ``filter_name`` on ``night`` until the night is closed and consumed (or ``stop``)."""
    unknown = sorted(set(programmes or ()) - set(settings.programmes))
    if unknown:
        raise ValueError(f"programme(s) {unknown} unknown; this survey has {sorted(settings.programmes)}")

    def show(r: LiveReport) -> None:
        progress.update(
            f"{r.status}: read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, group lag "
            f"{'?' if r.lag is None else r.lag}, {len(r.partitions)} partition(s), {r.rate:.0f} alerts/s"
        )

    report = run_live(
        filter_name,
        night,
        bootstrap_servers=settings.kafka(filter_service(filter_name)),
        naming=settings.naming,
        programmes=programmes or sorted(settings.programmes),
        copy_index=copy_index,
        stop=stop,
        progress=show,
        options=options,
    )
    progress.update(report.status, final=True)
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
        night = f"{archived_night:%Y%m%d}" if archived_night else None
        check_sources(sources, archived_night=night, storage_options=settings.storage_options)
        packets, counts = packets_for_batch(
            sources,
            archived_night=night,
            storage_options=settings.storage_options,
            prefer="parquet" if from_parquet else "tarball",
        )
    started = time.monotonic()

    def show(r: BatchResult) -> None:
        rate = r.read / max(time.monotonic() - started, 1e-9)
        progress.update(f"read {r.read}, passed {r.passed}, errors {r.errors + r.malformed}, {rate:.0f} alerts/s")

    result = run_batch(filter_name, packets, progress=show, progress_every=progress_every)
    progress.update(f"read {result.read}, passed {result.passed}", final=True)
    return FilteredArchive(result, counts, write_table(result.table, out) if out else None)
