"""The replay task: archived alerts back into Kafka, with progress and a table of what each source held.

Only transient Kafka errors retry, and a retry sends everything again from the start: the archiver drops the
duplicate candids of a night, a plain topic keeps them.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from alertdist.jobs import replay
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import format_night
from alertdist.settings import Settings
from alertdist.tasks.policy import transient_retries
from alertdist.tasks.progress import ArtifactProgress, artifact_key

__all__ = ["replay_sources"]


@task(**transient_retries([30]))
def replay_sources(settings: Settings, request: replay.ReplayRequest) -> dict:
    label = request.topic or f"{settings.survey}-{format_night(request.night)}"
    progress = ArtifactProgress(artifact_key("replay", label), f"Replaying into {label}")
    with stop_on_signals() as stop:
        done = replay.replay(settings, request, progress=progress, stop=stop)
    result = done.result
    create_table_artifact(
        [{"source": c.source, "good": c.good, "bad": c.bad} for c in done.counts]
        + [{"source": f"bad: {n}: {why}", "good": 0, "bad": 1} for n, why in result.bad_members[:20]],
        description=result.summary(),
    )
    get_run_logger().info(result.summary())
    return {
        "destination": result.destination,
        "read": result.read,
        "delivered": result.delivered,
        "bad": result.bad,
        "rejected": result.rejected,
        "closed": result.closed,
        "alerts_per_s": result.rate_alerts_s,
    }
