"""Filter tasks: one copy of a live filter, its summary table, a filter over archived packets, and a reanalysis
over many nights (one task per night's Parquet file, run where the flow's task runner puts it: Dask)."""

from __future__ import annotations

import datetime as dt
import time

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from alertdist.access.readers import ArchiveReadError
from alertdist.filters.live import LiveOptions
from alertdist.jobs import filters
from alertdist.nights.dates import format_night
from alertdist.settings import Settings
from alertdist.tasks.policy import task_label, transient_retries
from alertdist.tasks.progress import ArtifactProgress, artifact_key

__all__ = [
    "filter_archived",
    "filter_unit",
    "reanalysis_units",
    "run_filter_copy",
    "summarise_filter",
    "summarise_reanalysis",
    "wait_for_units",
]


@task(**transient_retries([5, 30, 120]), task_run_name=task_label("{filter_name}-{night}-copy{copy_index}"))
def run_filter_copy(
    settings: Settings,
    filter_name: str,
    night: dt.date,
    copy_index: int,
    programmes: list[int] | None,
    columnar: bool = False,
    batch_deadline_s: float = LiveOptions.batch_deadline_s,
) -> dict:
    """Copy ``copy_index`` always takes the same transactional id: a retried copy fences its predecessor and
    resumes from the group's committed offsets, so retries neither skip nor duplicate an output. The plug-in
    has ``batch_deadline_s`` to judge each batch."""
    progress = ArtifactProgress(
        artifact_key("filter", settings.survey, format_night(night), filter_name, copy_index),
        f"Filter {filter_name} copy {copy_index}",
        every_s=30.0,
    )
    r = filters.run_filter(
        settings,
        filter_name,
        night,
        programmes=programmes,
        copy_index=copy_index,
        progress=progress,
        columnar=columnar,
        options=LiveOptions(batch_deadline_s=batch_deadline_s),
    )
    return {
        "copy": r.copy_index,
        "status": r.status,
        **r.counts(),
        "partitions": len(r.partitions),
        "seconds": round(r.elapsed_s, 1),
        "by_programme": {str(settings.naming.programid_of(t)): c for t, c in sorted(r.by_topic.items())},
    }


@task(cache_policy=NO_CACHE)
def summarise_filter(settings: Settings, filter_name: str, night: dt.date, rows: list[dict]) -> None:
    total = {
        "copy": "all",
        **{k: sum(r[k] for r in rows) for k in ("read", "passed", "rejected", "errors", "malformed", "partitions")},
        "lag": min((r["lag"] for r in rows if r["lag"] is not None), default=None),
    }
    shown = [{k: v for k, v in row.items() if k != "by_programme"} for row in rows]
    create_table_artifact(
        [*shown, total],
        key=artifact_key("filter", settings.survey, format_night(night), filter_name),
        description=f"Filter {filter_name} on night {format_night(night)}",
    )


@task(**transient_retries([30, 120]))
def filter_archived(
    settings: Settings,
    filter_name: str,
    sources: list[str],
    out: str,
    archived_night: dt.date | None,
    from_parquet: bool,
) -> dict:
    """Reading a remote source retries on network errors only; a filter bug or a bad path fails at once."""
    progress = ArtifactProgress(
        artifact_key("offline", filter_name, archived_night or "sources"), f"Filter {filter_name}"
    )
    done = filters.filter_archived(
        settings,
        filter_name,
        sources,
        archived_night=archived_night,
        from_parquet=from_parquet,
        out=out,
        progress=progress,
        progress_every=5000,
    )
    result, logger = done.result, get_run_logger()
    for source, outcome, reason in result.problems[:20]:
        logger.warning("%s: %s: %s", outcome, source, reason)
    summary = {
        "filter": result.filter_name,
        "read": result.read,
        "passed": result.passed,
        "rejected": result.rejected,
        "errors": result.errors,
        "malformed": result.malformed,
        "bad_members": sum(c.bad for c in done.counts),
        "out": str(done.written),
    }
    create_table_artifact(
        [{"what": k, "value": str(v)} for k, v in summary.items()]
        + [{"what": f"source {c.source}", "value": f"{c.good} good, {c.bad} bad"} for c in done.counts],
        description=f"Filter {result.filter_name} over {', '.join(sources)}",
    )
    return summary


@task(cache_policy=NO_CACHE)
def reanalysis_units(
    settings: Settings, nights: list[dt.date], archive: str | None, programmes: list[int] | None
) -> tuple[list[filters.Unit], dict[str, str]]:
    return filters.reanalysis_units(settings, nights, archive=archive, programmes=programmes)


@task(
    **transient_retries([1, 3], ArchiveReadError),
    task_run_name=task_label("{filter_name}-{unit.night}-p{unit.programid}"),
)
def filter_unit(settings: Settings, filter_name: str, unit: filters.Unit, out: str, columnar: bool) -> dict:
    """A file that cannot be read is retried (a network blip reads like damage); a filter bug fails at once."""
    return filters.filter_unit(settings, filter_name, unit, out, columnar=columnar)


def wait_for_units(
    futures: list[PrefectFuture], units: list[filters.Unit], progress: ArtifactProgress
) -> tuple[list[dict], dict[str, str]]:
    """Each unit's counts as it finishes, with progress; a unit that failed (after its retries) is kept with its
    error, so one bad night never costs the others."""
    unit_of = {f.task_run_id: u for f, u in zip(futures, units)}
    rows, failures, started = [], {}, time.monotonic()
    for done, future in enumerate(as_completed(futures), 1):
        unit = unit_of[future.task_run_id]
        try:
            rows.append(future.result())
        except Exception as e:
            failures[f"{format_night(unit.night)} p{unit.programid}"] = f"{type(e).__name__}: {e}"
        passed = sum(r["passed"] for r in rows)
        text = filters.reanalysis_text(done, len(futures), passed, len(failures), started)
        progress.update(text, done / max(len(futures), 1), final=done == len(futures))
    return rows, failures


@task(cache_policy=NO_CACHE)
def summarise_reanalysis(filter_name: str, out: str, rows: list[dict], failures: dict[str, str]) -> dict:
    """Counts per night to ``out/_counts.json`` and to a table artifact, failed nights with their reason."""
    summary = filters.summarise_reanalysis(out, rows, failures)
    table = [{"night": night, **counts} for night, counts in summary["nights"].items()]
    table += [{"night": where, "failed": why} for where, why in summary["failed"].items()]
    create_table_artifact(
        table,
        key=artifact_key("reanalysis", filter_name),
        description=f"Filter {filter_name}: {summary['passed']} of {summary['read']} alerts passed; in {out}",
    )
    return summary
