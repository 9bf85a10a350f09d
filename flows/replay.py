"""Replay an archived night into Kafka on demand (from the UI or `prefect deployment run`).

``sources``: tarballs, Parquet files or datasets, or an archive root with ``archived_night`` (local, s3:// or
http(s)://). Exactly one destination: ``topic`` (everything into one topic, created if missing) or ``night``
(the night's programme topics through the publisher, then closed, so the filter and archive flows can run on
it). ``speed`` replays at the night's cadence that many times faster; none: as fast as possible.
"""

from __future__ import annotations

from prefect import flow

from alertdist.jobs.replay import ReplayRequest
from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.policy import run_label
from alertdist.tasks.replay import replay_sources


@flow(name="replay-night", flow_run_name=run_label("replay", "sources", "topic", "night", tonight=False))
def replay_night(
    sources: list[str],
    topic: str | None = None,
    night: Night | None = None,
    archived_night: Night | None = None,
    speed: float | None = None,
    from_parquet: bool = False,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
    allow_unverified: bool = False,
) -> dict:
    """Replay ``sources`` into ``topic``, or as ``night`` (YYYYMMDD) which is then closed; a source with no checksum
    (MD5SUMS line, manifest entry) only with ``allow_unverified``."""
    request = ReplayRequest(
        tuple(sources),
        topic=topic,
        night=night,
        archived_night=archived_night,
        from_parquet=from_parquet,
        speed=speed,
        partitions=partitions,
        allow_unverified=allow_unverified,
    )
    return replay_sources(Settings.load(bootstrap_servers=bootstrap_servers, survey=survey), request)
