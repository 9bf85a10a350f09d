"""Replay an archived night into Kafka on demand (from the UI or `prefect deployment run`).

``sources``: tarballs, Parquet files or datasets, or an archive root with ``archived_night`` (local, s3:// or
http(s)://). Exactly one destination: ``topic`` (everything into one topic, created if missing) or ``night``
(the night's programme topics through the publisher, then the night is closed so the filter and archive
flows can run on it). ``speed`` replays at the night's cadence that many times faster; none: as fast as
possible. Only transient Kafka errors retry, and a retry sends the night again from the start: the archiver
drops the duplicate candids, a plain topic keeps them.
"""

from __future__ import annotations

import re
import threading

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.kafka.signals import stop_on_signals
from alertdist.access.readers import open_sources
from alertdist.access.replay import ReplayProgress, ensure_topic, replay_into_night, replay_to_topic
from alertdist.kafka.errors import retry_condition
from alertdist.nights.topics import TopicNaming, TopicSettings, parse_night, site_for_timezone


@task(retries=1, retry_delay_seconds=[30], retry_condition_fn=retry_condition(), cache_policy=NO_CACHE)
def replay_sources(sources: list[str], topic: str | None, night: str | None, archived_night: str | None,
                   speed: float | None, from_parquet: bool, partitions: int, bootstrap_servers: str,
                   naming: TopicNaming, settings: Settings) -> dict:
    alerts, counts, names = open_sources(sources, archived_night=archived_night or night,
                                         storage_options=settings.storage_options,
                                         prefer="parquet" if from_parquet else "tarball")
    label = topic or f"{naming.survey}-{night}"
    artifact = create_progress_artifact(0.0, key=re.sub(r"[^a-z0-9-]+", "-", f"replay-{label}".lower()),
                                        description=f"Replaying into {label}")

    def report(p: ReplayProgress) -> None:
        try:  # the UI being down must never stop a replay
            update_progress_artifact(artifact, 0.0, description=(
                f"{label}: read {p.read}, delivered {p.delivered}, bad {p.bad}, {p.rate:,.0f} alerts/s"))
        except Exception as e:
            get_run_logger().warning("could not update the progress artifact: %s", e)

    stop = threading.Event()
    with stop_on_signals(stop):
        if topic:
            ensure_topic(bootstrap_servers, topic, TopicSettings(partitions=partitions))
            result = replay_to_topic(alerts, bootstrap_servers=bootstrap_servers, topic=topic, sources=names,
                                     counts=counts, speed=speed, stop=stop, progress=report, progress_every_s=5.0)
        else:
            result = replay_into_night(alerts, bootstrap_servers=bootstrap_servers, naming=naming,
                                       night=parse_night(night), sources=names, counts=counts,
                                       site=site_for_timezone(settings.site_timezone),
                                       topic_settings=TopicSettings(partitions=partitions), speed=speed, stop=stop,
                                       progress=report, progress_every_s=5.0)
    update_progress_artifact(artifact, 100.0, description=result.summary())
    create_table_artifact([{"source": c.source, "good": c.good, "bad": c.bad} for c in counts]
                          + [{"source": f"bad: {n}: {why}", "good": 0, "bad": 1} for n, why in result.bad_members[:20]],
                          description=result.summary())
    get_run_logger().info(result.summary())
    return {"destination": result.destination, "read": result.read, "delivered": result.delivered, "bad": result.bad,
            "rejected": result.rejected, "closed": result.closed, "alerts_per_s": result.rate_alerts_s}


def _run_name() -> str:
    p = flow_run.parameters
    first = str((p.get("sources") or ["?"])[0]).rstrip("/").rsplit("/", 1)[-1]
    return f"replay-{first}-to-{p.get('topic') or p.get('night')}"


@flow(name="replay-night", flow_run_name=_run_name)
def replay_night(
    sources: list[str],
    topic: str | None = None,
    night: str | None = None,
    archived_night: str | None = None,
    speed: float | None = None,
    from_parquet: bool = False,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict:
    """Replay ``sources`` into ``topic``, or as ``night`` (YYYYMMDD) which is then closed."""
    if bool(topic) == bool(night):
        raise ValueError("give exactly one destination: topic (one topic) or night (its programme topics)")
    settings = Settings.from_env()
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    return replay_sources(sources, topic, night, archived_night, speed, from_parquet, partitions,
                          bootstrap_servers or settings.bootstrap_servers, naming, settings)
