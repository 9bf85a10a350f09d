"""The publishing task: one night's source into Kafka, then the night closed, with progress in the UI.

Retries only transient Kafka errors; a retry is safe for a drop folder (only unacknowledged files are left) but
republishes a whole simulated night or tarball (same candids: the archiver drops the copies).
"""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.artifacts import create_table_artifact

from alertdist.jobs import publish
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicSettings
from alertdist.publish.sources import SourceSpec
from alertdist.settings import Settings
from alertdist.tasks.policy import transient_retries
from alertdist.tasks.progress import ArtifactProgress, artifact_key

__all__ = ["publish_night"]


@task(**transient_retries([10, 60]))
def publish_night(
    settings: Settings, night: dt.date, source: SourceSpec, topics: TopicSettings | None, check_night: bool = True
) -> dict:
    key = artifact_key(settings.survey, format_night(night))
    progress = ArtifactProgress(f"publish-{key}", f"Publishing night {format_night(night)}")
    with stop_on_signals() as stop:
        result = publish.publish_night(
            settings, night, source, topics=topics, check_night=check_night, progress=progress, stop=stop
        )
    create_table_artifact(
        result.summary_rows(),
        key=f"publish-summary-{key}",
        description=f"Night {format_night(night)}: {'closed' if result.closed else 'left open'}",
    )
    return {
        "night": result.night,
        "closed": result.closed,
        **result.counts(),
        "elapsed_s": result.elapsed_s,
        "pace": source.pace,
        "rate_alerts_s": result.rate_alerts_s,
        "rate_mb_s": result.rate_mb_s,
        "latency_ms": result.latency_ms,
    }
