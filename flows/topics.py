"""Create a night's Kafka topics at dusk: one per programme, the rejected-packets topic, the nights topic, and
the ACLs of every registered reader. Idempotent: a second run reports each topic as "exists" (with any settings
that drifted), so a retry or a second schedule does no harm."""

from __future__ import annotations

from prefect import flow

from alertdist.nights.dates import Night
from alertdist.nights.topics import TopicSettings
from alertdist.settings import Settings
from alertdist.tasks.nights import open_night
from alertdist.tasks.policy import run_label


@flow(name="create-night-topics", flow_run_name=run_label("topics", "night"))
def create_night_topics(
    night: Night | None = None,
    partitions: int = 14,
    replication_factor: int | None = None,
    retention_days: float = 7.0,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict[str, str]:
    """Create (or check) the topics of ``night`` (YYYYMMDD; default tonight at the site)."""
    settings = Settings.load(bootstrap_servers=bootstrap_servers, survey=survey)
    topics = TopicSettings(
        partitions=partitions, replication_factor=replication_factor, retention_ms=int(retention_days * 86400 * 1000)
    )
    return open_night(settings, night or settings.tonight(), topics)
