"""One whole night, end to end: topics, filters, publishing, closing, draining, archiving, verifying.

Each stage is its own flow run in the UI (a subflow); the filters run beside the publisher from the start of
the night and stop by themselves once it is closed and consumed. At the end the night must balance:
published = archived + duplicates dropped, every filter consumed everything, or the run fails and says what is
missing. Events `alertdist.night.opened/closed/archived` let automations (a notification, a page) hook in.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from alertdist.filters import available_filters
from alertdist.flows.archive_night import archive_night
from alertdist.flows.filter_night import filter_night
from alertdist.flows.publish import publish_night
from alertdist.flows.topics import create_night_topics
from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.nights import abort_night, announce, report_night
from alertdist.tasks.policy import run_label


@task(cache_policy=NO_CACHE, task_run_name="filter-{filter_name}")
def run_filter_stage(filter_name: str, night: dt.date, parallelism: int, settings: Settings) -> list[dict]:
    """The filter's own flow, run from a task so that it runs beside the publisher."""
    return filter_night(
        filter_name=filter_name,
        night=night,
        parallelism=parallelism,
        bootstrap_servers=settings.bootstrap_servers,
        survey=settings.survey,
    )


@flow(name="night", flow_run_name=run_label("night", "night"))
def night(
    night: Night | None = None,
    source: str = "simulate:3000",
    speed: float | None = None,
    filters: list[str] | None = None,
    filter_parallelism: int = 1,
    dest: str | None = None,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict:
    """Run ``night`` (YYYYMMDD; default tonight) from ``source`` (a drop folder, tarball, or simulate:N[:SEED])
    with ``filters`` (default the bundled ones) live beside the publisher."""
    settings = Settings.load(bootstrap_servers=bootstrap_servers, survey=survey, archive_url=dest)
    night = night or settings.tonight()
    common = dict(bootstrap_servers=settings.bootstrap_servers, survey=settings.survey)

    create_night_topics(night=night, partitions=partitions, **common)
    announce("opened", settings, night, {"source": source})
    running = {
        name: run_filter_stage.submit(name, night, filter_parallelism, settings)
        for name in (filters if filters is not None else sorted(available_filters()))
    }
    try:
        published = publish_night(source=source, night=night, speed=speed, partitions=partitions, **common)
    except BaseException as e:
        get_run_logger().error("publishing failed (%s); closing the night so the filters drain and stop", e)
        abort_night(settings, night, f"publishing failed: {e}")
        for future in running.values():
            future.wait()
        raise
    announce("closed", settings, night, {k: published[k] for k in ("read", "delivered", "rejected")})
    filter_results = {name: future.result() for name, future in running.items()}
    archived = archive_night(night=night, dest=settings.archive, **common)
    announce("archived", settings, night, {"dest": archived["dest"], "written": archived["written"]})
    return report_night(settings, night, published, filter_results, archived)
