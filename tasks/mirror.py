"""Tasks of the two-tier mode: keep MirrorMaker 2 running, wait for a night's topics on the public cluster, and
close the night there, with the mirror's lag in the UI while the night goes on."""

from __future__ import annotations

import datetime as dt
import threading

from prefect import task

from alertdist.jobs import mirror
from alertdist.kafka.signals import stop_on_signals
from alertdist.mirror.closing import MirrorNotDone
from alertdist.nights.dates import format_night
from alertdist.settings import Settings
from alertdist.tasks.policy import task_label, transient_retries
from alertdist.tasks.progress import ArtifactProgress, artifact_key

__all__ = ["await_mirrored_topics", "close_night_downstream", "keep_mirror_running", "secure_night_downstream"]


@task(**transient_retries([10, 60, 300]), task_run_name="mirror")
def keep_mirror_running(settings: Settings, every_s: float, hours: float | None) -> int:
    """Until the run is cancelled (or ``hours`` have passed); returns how often MirrorMaker 2 was restarted."""
    stop = threading.Event()
    progress = ArtifactProgress(artifact_key("mirror", settings.survey), "MirrorMaker 2")
    timer = threading.Timer(hours * 3600 if hours is not None else float("inf"), stop.set)
    timer.daemon = True
    if hours is not None:
        timer.start()
    try:
        with stop_on_signals(stop):
            return mirror.keep_mirror_running(settings, stop, every_s=every_s, progress=progress)
    finally:
        timer.cancel()


@task(**transient_retries([5, 30]))
def secure_night_downstream(settings: Settings, night: dt.date) -> int:
    """The night's ACLs on the public cluster (the mirror's and the readers'), before its topics exist upstream."""
    return mirror.secure_night_downstream(settings, night)


@task(**transient_retries([5, 30]))
def await_mirrored_topics(settings: Settings, night: dt.date) -> list[str]:
    return mirror.wait_for_mirrored_topics(settings, night)


@task(**transient_retries([30, 120], MirrorNotDone), task_run_name=task_label("close-downstream-{night}"))
def close_night_downstream(settings: Settings, night: dt.date, timeout_s: float | None = None) -> dict:
    """The night's closing record on the public cluster; the mirror's lag shown as it goes."""
    label = format_night(night)
    progress = ArtifactProgress(artifact_key("mirror-lag", settings.survey, label), f"Mirror lag, night {label}")
    with stop_on_signals() as stop:
        state = mirror.close_night_downstream(settings, night, progress=progress, stop=stop, timeout=timeout_s)
    return {"alerts": state.total_messages(), "end_offsets": state.end_offsets}
