"""Create a night's Kafka topics at dusk: one per programme, the rejected-packets topic, and the nights topic.

Idempotent: run it again and each topic reports "exists" (with any settings that drifted), so a retry or a
second schedule can do no harm. Without a night it creates tonight's, as the observatory names it.
"""

from __future__ import annotations

import datetime as dt
import re

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.kafka.clients import admin_client
from alertdist.kafka.errors import retry_condition
from alertdist.security import secure_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics, parse_night, site_for_timezone
from alertdist.nights.topics import tonight as night_starting_tonight


@task(retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=retry_condition(), cache_policy=NO_CACHE)
def ensure_topics(bootstrap_servers: str, naming: TopicNaming, night: dt.date, settings: TopicSettings) -> dict:
    return ensure_night_topics(admin_client(bootstrap_servers), naming, night, settings)


@task(retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=retry_condition())
def apply_night_acls(bootstrap_servers: str, naming: TopicNaming, night: dt.date) -> int:
    """Grant each registered user (`alertdist users add`) READ on its programmes' topics of the night."""
    return secure_night(bootstrap_servers, naming, night)


def tonight(settings: Settings) -> dt.date:
    """The night starting this evening (or under way) at the site of ``settings``; see `alertdist.nights.topics.tonight`."""
    return night_starting_tonight(site_for_timezone(settings.site_timezone))


def _run_name() -> str:
    return f"topics-{flow_run.parameters.get('night') or 'tonight'}"


@flow(name="create-night-topics", flow_run_name=_run_name)
def create_night_topics(
    night: str | None = None,
    partitions: int = 14,
    replication_factor: int | None = None,
    retention_days: float = 7.0,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict[str, str]:
    """Create (or check) the topics of ``night`` (YYYYMMDD; default tonight at the site)."""
    settings = Settings.from_env()
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    night_day = parse_night(night) if night else tonight(settings)
    topic_settings = TopicSettings(partitions=partitions, replication_factor=replication_factor,
                                   retention_ms=int(retention_days * 86400 * 1000))
    outcome = ensure_topics(bootstrap_servers or settings.bootstrap_servers, naming, night_day, topic_settings)
    acls = apply_night_acls(bootstrap_servers or settings.bootstrap_servers, naming, night_day)
    get_run_logger().info("%d ACL(s) applied for the registered users", acls)
    for topic, what in outcome.items():
        get_run_logger().info("%s: %s", topic, what)
    key = re.sub(r"[^a-z0-9-]+", "-", f"topics-{naming.survey}-{night_day:%Y%m%d}".lower())
    create_table_artifact([{"topic": t, "outcome": o} for t, o in outcome.items()], key=key,
                          description=f"Topics of night {night_day:%Y%m%d}")
    return outcome
