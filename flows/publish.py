"""Publish one night's alert packets to Kafka, then close the night (long-running: dusk to NIGHT_DONE).

``source``: a drop folder path (watched live until the pipeline writes NIGHT_DONE), ``folder:PATH``, a tarball
path or URL, or ``simulate:N[:SEED]``. The night's topics and ACLs are ensured first (idempotent).
"""

from __future__ import annotations

from prefect import flow

from alertdist.nights.dates import Night
from alertdist.nights.topics import TopicSettings
from alertdist.publish.sources import SourceSpec
from alertdist.settings import Settings
from alertdist.tasks.policy import run_label
from alertdist.tasks.publish import publish_night as publish


@flow(name="publish-night", flow_run_name=run_label("publish", "night", "source"))
def publish_night(
    source: str,
    night: Night | None = None,
    speed: float | None = None,
    check_night: bool = True,
    done_folder: str | None = None,
    partitions: int | None = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict:
    """Publish ``source`` into ``night`` (YYYYMMDD; default tonight at the site) and close the night; with
    ``partitions`` None the night was opened already (the night flow's dusk step) and is only checked to be."""
    settings = Settings.load(bootstrap_servers=bootstrap_servers, survey=survey)
    spec = SourceSpec.parse(source, speed=speed, done_folder=done_folder)
    topics = TopicSettings(partitions=partitions) if partitions is not None else None
    return publish(settings, night or settings.tonight(), spec, topics, check_night)
