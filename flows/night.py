"""One whole night, end to end: topics, filters, publishing, closing, draining, archiving, verifying.

Each stage is its own flow run in the UI (a subflow). The long-running ones (the publisher, each filter, the
archiver) run as in production, each in a process of its own (Prefect's process pool): in threads of one
process they shared one interpreter lock, and the night published at a tenth of the publisher's own speed.
The filters run beside the publisher from the start of the night and stop by themselves once it is closed and
consumed; if publishing fails, the night is closed anyway so that they drain and stop. At the end the night
must balance: published = archived + duplicates dropped, every filter consumed everything, or the run fails and
says what is missing. Events `alertdist.night.opened/closed/archived` let automations (a notification, a page)
hook in.

Two-tier (``public_bootstrap_servers`` given): the publisher writes to the producing cluster, MirrorMaker 2 (the
`mirror` deployment, or `alertdist mirror start`) copies the night to the public cluster, and the filters and
the archiver read there; the night is closed there with its own offsets once all of it has arrived, and the
mirror's lag is shown all night (the `close-downstream` task). The night's ACLs are applied on the public
cluster first, for the users registered there (the mirror, the readers, the filters, the archiver).
"""

from __future__ import annotations

import contextlib
import os

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner

from alertdist.filters import available_filters
from alertdist.flows.archive_night import archive_night
from alertdist.flows.filter_night import filter_night
from alertdist.flows.publish import publish_night
from alertdist.flows.topics import create_night_topics
from alertdist.jobs.usage import process_usage
from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.live_ops import start_live_panel
from alertdist.tasks.mirror import await_mirrored_topics, close_night_downstream, secure_night_downstream
from alertdist.tasks.nights import abort_night, announce, report_night
from alertdist.tasks.policy import run_label

#: Processes in the night's pool: the publisher and each filter at once, then the archiver. Spawned as needed;
#: filters beyond it would start only when the publisher is done (and still consume the whole night).
STAGE_PROCESSES = 8


STAGES = {"publish": publish_night, "filter": filter_night, "archive": archive_night}
#: Each stage's CPU priority (nice value). The stream to the world comes first: when the cores are saturated the
#: publisher keeps the camera's pace and the filters fall behind and catch up (their outputs are exactly-once
#: whenever they come); below saturation, as at ZTF's rates, every stage gets all the CPU it asks for anyway.
NICENESS = {"publish": 0, "filter": 10, "archive": 0}


def run_stage(name: str, kind: str, parameters: dict) -> tuple[object, dict]:
    """Run the ``kind`` stage's flow in this process of the pool; its result, and what it cost the process."""
    with contextlib.suppress(PermissionError):  # only a privileged process may raise its priority again
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS[kind])
    with process_usage() as usage:
        result = STAGES[kind](**parameters)
    return result, usage


# Decorated by a call, not with @task: the module's name `run_stage` must stay the plain function so that the pool
# pickles it by reference, and its process imports this module (and the stages' flows) whole.
stage = task(run_stage, cache_policy=NO_CACHE, task_run_name="{name}")


@flow(
    name="night",
    flow_run_name=run_label("night", "night"),
    task_runner=ProcessPoolTaskRunner(max_workers=STAGE_PROCESSES),
)
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
    public_bootstrap_servers: str | None = None,
) -> dict:
    """Run ``night`` (YYYYMMDD; default tonight) from ``source`` (a drop folder, tarball, or simulate:N[:SEED])
    with ``filters`` (default the bundled ones) live beside the publisher; across the mirror to
    ``public_bootstrap_servers`` when given."""
    settings = Settings.load(
        bootstrap_servers=bootstrap_servers,
        survey=survey,
        archive_url=dest,
        public_bootstrap_servers=public_bootstrap_servers,
    )
    night = night or settings.tonight()
    common = dict(night=night, bootstrap_servers=settings.bootstrap_servers, survey=settings.survey)
    readers = (
        {**common, "public_bootstrap_servers": settings.public_bootstrap_servers}
        if public_bootstrap_servers
        else common
    )

    if public_bootstrap_servers:  # the mirror may create the night's topics there the moment they exist upstream
        secure_night_downstream(settings, night)
    create_night_topics(partitions=partitions, **common)
    closing = None
    if public_bootstrap_servers:
        await_mirrored_topics(settings, night)
        closing = close_night_downstream.submit(settings, night)
    announce("opened", settings, night, {"source": source})
    panel = start_live_panel(settings, night, public=bool(public_bootstrap_servers))  # live artifact, alert events
    running = {
        name: stage.submit(
            f"filter-{name}", "filter", dict(filter_name=name, parallelism=filter_parallelism, **readers)
        )
        for name in (filters if filters is not None else sorted(available_filters()))
    }
    publishing = dict(source=source, speed=speed, partitions=partitions, **common)
    try:
        published, usage = stage.submit("publish", "publish", publishing).result()
    except BaseException as e:
        get_run_logger().error("publishing failed (%s); closing the night so the filters drain and stop", e)
        abort_night(settings, night, f"publishing failed: {e}")
        for future in running.values():
            future.wait()
        raise
    announce("closed", settings, night, {k: published[k] for k in ("read", "delivered", "rejected")})
    stages = {"publish": usage}
    mirrored = closing.result() if closing else None
    filter_results = {}
    for name, future in running.items():
        filter_results[name], stages[f"filter {name}"] = future.result()
    archived, stages["archive"] = stage.submit("archive", "archive", dict(dest=settings.archive, **readers)).result()
    announce("archived", settings, night, {"dest": archived["dest"], "written": archived["written"]})
    panel.stop()
    result = report_night(settings, night, published, filter_results, archived, stages)
    return {**result, "mirrored": mirrored["alerts"]} if mirrored else result
