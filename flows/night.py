"""One whole night, end to end: topics, filters, publishing, closing, draining, archiving, verifying.

Each stage is its own flow run in the UI (a subflow). The long-running ones (the publisher, each filter, the
archiver) run as in production, each in a process of its own (Prefect's process pool): in threads of one
process they shared one interpreter lock, and the night published at a tenth of the publisher's own speed.
The filters run beside the publisher from the start of the night and stop by themselves once it is closed and
consumed; if publishing fails, the night is closed anyway so that they drain and stop. The archive never waits
for a filter: it starts as soon as the publisher has closed the night, while the filters finish beside it; a
filter that failed is reported at the end (an artifact, and the run fails saying so, after the archive). At the
end the night must balance: published = archived + duplicates dropped, every filter consumed everything, or the
run fails and says what is missing.

Each stage process gets one Kafka login, its own service's (`stage_logins`): the logins leave this process's environment
before the first stage is started, and each stage is handed its own (never as a flow parameter). Events
`alertdist.night.opened/closed/archived` let automations (a notification, a page) hook in.

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
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner
from pydantic import SecretStr

from alertdist.filters import available_filters, named_filter
from alertdist.flows.archive_night import archive_night
from alertdist.flows.filter_night import filter_night
from alertdist.flows.publish import publish_night
from alertdist.flows.topics import create_night_topics
from alertdist.jobs.logins import logins_out_of_environment, stage_logins, use_logins
from alertdist.metrics.usage import process_usage
from alertdist.nights.dates import Night, format_night
from alertdist.nights.report import NightReconciliationError
from alertdist.security import ARCHIVER, PUBLISHER, filter_service
from alertdist.settings import Settings
from alertdist.tasks.live_ops import start_live_panel
from alertdist.tasks.mirror import await_mirrored_topics, close_night_downstream, secure_night_downstream
from alertdist.tasks.nights import abort_night, announce, report_night
from alertdist.tasks.policy import run_label
from alertdist.tasks.progress import artifact_key

#: Processes in the night's pool: the publisher and each filter at once, then the archiver. Spawned as needed;
#: filters beyond it would start only when the publisher is done (and still consume the whole night).
STAGE_PROCESSES = 8


STAGES = {"publish": publish_night, "filter": filter_night, "archive": archive_night}
#: Each stage's CPU priority (nice value). The stream to the world comes first: when the cores are saturated the
#: publisher keeps the camera's pace and the filters fall behind and catch up (their outputs are exactly-once
#: whenever they come); below saturation, as at ZTF's rates, every stage gets all the CPU it asks for anyway.
NICENESS = {"publish": 0, "filter": 10, "archive": 0}


class FilterStageError(RuntimeError):
    """The night was published and archived, but a filter failed: it is reported, it never costs the archive."""


def run_stage(
    name: str, kind: str, parameters: dict, logins: dict[str, SecretStr] | None = None
) -> tuple[object, dict]:
    """Run the ``kind`` stage's flow in this process of the pool with ``logins`` (its own service's login, as
    environment variables) and no other; its result, and what it cost the process."""
    with contextlib.suppress(PermissionError):  # only a privileged process may raise its priority again
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS[kind])
    use_logins(logins or {})
    with process_usage() as usage:
        result = STAGES[kind](**parameters)
    return result, usage


class StageProcesses(ProcessPoolTaskRunner):
    """The night's process pool, whose helper process (multiprocessing's resource tracker, started with the pool)
    inherits no Kafka login either; the stage processes themselves start inside `logins_out_of_environment`."""

    def __enter__(self):
        with logins_out_of_environment():
            return super().__enter__()


# Decorated by a call, not with @task: the module's name `run_stage` must stay the plain function so that the pool
# pickles it by reference, and its process imports this module (and the stages' flows) whole.
stage = task(run_stage, cache_policy=NO_CACHE, task_run_name="{name}")


@flow(
    name="night",
    flow_run_name=run_label("night", "night"),
    task_runner=StageProcesses(max_workers=STAGE_PROCESSES),
)
def night(
    night: Night | None = None,
    source: str = "simulate:3000",
    speed: float | None = None,
    filters: list[str] | None = None,
    filter_parallelism: int = 1,
    filter_deadline_s: float = 10.0,
    dest: str | None = None,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
    public_bootstrap_servers: str | None = None,
) -> dict:
    """Run ``night`` (YYYYMMDD; default tonight) from ``source`` (a drop folder, tarball, or simulate:N[:SEED])
    with ``filters`` (default the bundled ones; a plug-in as ``NAME=package.module:function``, each batch within
    ``filter_deadline_s``) live beside the publisher; across the mirror to ``public_bootstrap_servers`` when
    given."""
    settings = Settings.load(
        bootstrap_servers=bootstrap_servers,
        survey=survey,
        archive_url=dest,
        public_bootstrap_servers=public_bootstrap_servers,
    )
    night = night or settings.tonight()
    common = {"night": night, "bootstrap_servers": settings.bootstrap_servers, "survey": settings.survey}
    readers = (
        {**common, "public_bootstrap_servers": settings.public_bootstrap_servers}
        if public_bootstrap_servers
        else common
    )

    if public_bootstrap_servers:  # the mirror may create the night's topics there the moment they exist upstream
        secure_night_downstream(settings, night)
    create_night_topics(partitions=partitions, **common)
    with logins_out_of_environment():
        return _stages(settings, night, source, speed, filters, filter_parallelism, filter_deadline_s, readers)


def _stages(settings, night, source, speed, filters, filter_parallelism, filter_deadline_s, readers):
    """The night's stages once its topics exist: publisher and filters at once, then the archive; the report."""
    two_tier = "public_bootstrap_servers" in readers
    common = {k: readers[k] for k in ("night", "bootstrap_servers", "survey")}
    closing = None
    if two_tier:
        await_mirrored_topics(settings, night)
        closing = close_night_downstream.submit(settings, night)
    announce("opened", settings, night, {"source": source})
    panel = start_live_panel(settings, night, public=two_tier)  # the live artifact; firing alerts as events
    try:
        running = _start_filters(settings, filters, filter_parallelism, filter_deadline_s, readers, two_tier)
        publishing = dict(source=source, speed=speed, partitions=None, **common)  # opened at dusk: only checked
        try:
            published, usage = stage.submit(
                "publish", "publish", publishing, stage_logins(settings, PUBLISHER)
            ).result()
        except BaseException as e:
            get_run_logger().error("publishing failed (%s); closing the night so the filters drain and stop", e)
            abort_night(settings, night, f"publishing failed: {e}")
            for future in running.values():
                future.wait()
            raise
        announce("closed", settings, night, {k: published[k] for k in ("read", "delivered", "rejected")})
        stages = {"publish": usage}
        # the archive starts now, whatever the filters do: they finish beside it
        archiving = stage.submit(
            "archive",
            "archive",
            dict(dest=settings.archive, **readers),
            stage_logins(settings, ARCHIVER, public=bool(two_tier)),
        )
        mirrored = closing.result() if closing else None
        archived, stages["archive"] = archiving.result()
        announce("archived", settings, night, {"dest": archived["dest"], "written": archived["written"]})
        filter_results, failed = {}, {}
        for name, future in running.items():
            try:
                filter_results[name], stages[f"filter {name}"] = future.result()
            except Exception as e:  # reported below, with the night's report; the archive is already written
                failed[name] = f"{type(e).__name__}: {e}"
                filter_results[name] = [_failed_row(failed[name])]
        try:
            result = report_night(settings, night, published, filter_results, archived, stages)
        except NightReconciliationError as e:
            if not failed:
                raise
            _report_failed_filters(settings, night, archived, failed, str(e))
        if failed:
            _report_failed_filters(settings, night, archived, failed, "")
        return {**result, "mirrored": mirrored["alerts"]} if mirrored else result
    finally:  # the panel stops whichever way the night ends (a failed publisher included)
        panel.stop()


def _start_filters(settings, filters, parallelism, deadline_s, readers, two_tier) -> dict:
    """Each filter's stage started (all of them when ``filters`` is None), each with its own login."""
    running = {}
    for chosen in filters if filters is not None else sorted(available_filters()):
        name = named_filter(chosen)[0] or chosen
        parameters = {"filter_name": chosen, "parallelism": parallelism, "batch_deadline_s": deadline_s}
        login = stage_logins(settings, filter_service(name), public=bool(two_tier))
        running[name] = stage.submit(f"filter-{name}", "filter", {**parameters, **readers}, login)
    return running


def _failed_row(reason: str) -> dict:
    """A failed filter's line in the night's report: it settled nothing, its lag is unknown, and why."""
    counts = dict.fromkeys(("read", "passed", "rejected", "errors", "malformed", "partitions"), 0)
    return {"copy": "all", "status": f"FAILED: {reason}", **counts, "lag": None, "seconds": 0.0, "by_programme": {}}


def _report_failed_filters(settings: Settings, night, archived: dict, failed: dict[str, str], report: str) -> None:
    """An artifact naming each failed filter and why, then the run fails saying the archive is done."""
    label = format_night(night)
    lines = "\n".join(f"- **{name}**: {reason}" for name, reason in sorted(failed.items()))
    create_markdown_artifact(
        f"# Night {label}: filter(s) failed\n\nThe night was archived ({archived['written']} alerts in "
        f"{archived['dest']}); these filters did not finish:\n\n{lines}\n",
        key=f"night-failed-filters-{artifact_key(settings.survey, label)}",
        description=f"Night {label}: failed filters",
    )
    raise FilterStageError(
        f"night {label} was archived ({archived['written']} alerts in {archived['dest']}), but filter(s) failed: "
        + "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
        + (f". The night's report: {report}" if report else "")
        + ". Fix the filter and run it again on the night (alertdist filter run NAME --night "
        f"{label}): it resumes from its last committed offsets"
    )
