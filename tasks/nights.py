"""Tasks of a night as a whole: open it at dusk, close it when publishing failed, report it, announce it."""

from __future__ import annotations

import datetime as dt

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from alertdist.jobs import nights
from alertdist.nights.dates import format_night
from alertdist.nights.report import (
    NightReconciliationError,
    by_measure,
    checksums_markdown,
    file_rows,
    stage_rows,
)
from alertdist.nights.topics import TopicSettings
from alertdist.settings import Settings
from alertdist.tasks.policy import transient_retries
from alertdist.tasks.progress import artifact_key

__all__ = ["abort_night", "announce", "open_night", "report_night"]


@task(**transient_retries([5, 30, 120]))
def open_night(settings: Settings, night: dt.date, topic_settings: TopicSettings) -> dict[str, str]:
    """The night's topics and its readers' ACLs (idempotent), shown as a table."""
    opened = nights.open_night(settings, night, topic_settings)
    log = get_run_logger()
    log.info("%d ACL(s) applied for the registered users", opened.acls)
    for topic, what in opened.topics.items():
        log.info("%s: %s", topic, what)
    create_table_artifact(
        [{"topic": t, "outcome": o} for t, o in opened.topics.items()],
        key=artifact_key("topics", settings.survey, format_night(night)),
        description=f"Topics of night {format_night(night)}",
    )
    return opened.topics


@task(cache_policy=NO_CACHE)
def abort_night(settings: Settings, night: dt.date, reason: str) -> bool:
    return nights.abort_night(settings, night, reason)


def report_night(
    settings: Settings,
    night: dt.date,
    published: dict,
    filters: dict[str, list[dict]],
    archived: dict,
    stages: dict[str, dict] | None = None,
) -> dict:
    """The night's tables and plot as artifacts; fails the run, naming what is missing, if it does not balance.

    A plain function called by the `night` flow, not a task: its artifacts then belong to the night's flow run
    (a task's show "Flow run: None" in the UI)."""
    label = format_night(night)
    summary = nights.summarise_night(settings, night, published, filters, archived["dest"])
    key = artifact_key(settings.survey, label)
    for name, rows, what in (
        ("summary", by_measure(summary.summary), "every alert accounted for"),
        ("throughput", summary.throughput, "publishing throughput and latency percentiles"),
        ("filters", summary.filters, "filters and their final consumer lag"),
        ("archive", file_rows(summary.files), f"archive files in {archived['dest']} (full checksums: night-checksums)"),
        ("stages", stage_rows(stages or {}, published.get("read", 0)), "each stage's process, CPU time and memory"),
    ):
        create_table_artifact(rows, key=f"night-{name}-{key}", description=f"Night {label}: {what}")
    for name, markdown, what in (
        ("exposures", summary.exposure_plot, "alerts per exposure"),
        ("checksums", checksums_markdown(summary.files, f"Archive files of night {label}"), "full checksums"),
    ):
        create_markdown_artifact(markdown, key=f"night-{name}-{key}", description=f"Night {label}: {what}")
    if summary.problems:
        raise NightReconciliationError(f"night {label} does not balance: " + "; ".join(summary.problems))
    return {
        "night": label,
        "archive": archived["dest"],
        "manifest": archived["manifest"],
        "published": sum(published["delivered"].values()),
        "archived": archived["written"],
        "duplicates": archived["duplicates"],
        "filters": {row["filter"]: row["passed"] for row in summary.filters},
        "stages": stages or {},
        "rate_alerts_s": published.get("rate_alerts_s", 0.0),
        "latency_ms": published.get("latency_ms", {}),
    }


def announce(event: str, settings: Settings, night: dt.date, payload: dict) -> None:
    """Emit ``alertdist.night.<event>`` for automations (a notification when a night is archived, a page...)."""
    emit_event(
        event=f"alertdist.night.{event}",
        payload=payload,
        resource={
            "prefect.resource.id": f"alertdist.night.{settings.survey}.{format_night(night)}",
            "prefect.resource.name": f"{settings.survey} night {format_night(night)}",
        },
    )
