"""Publish one night's alert packets to Kafka, then close the night (long-running: dusk to NIGHT_DONE).

``source`` says where packets come from: a drop folder path (watched live until the pipeline writes
NIGHT_DONE), ``folder:PATH``, a tarball path or URL, or ``simulate:N[:SEED]``. The topics are ensured first
(idempotent). The publishing task retries only transient Kafka errors; a retry is safe for a drop folder
(only unacknowledged files are left) but republishes a whole simulated night or tarball (same candids: the
archiver deduplicates).
"""

from __future__ import annotations

import re
import threading

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.flows.topics import apply_night_acls, ensure_topics, tonight
from alertdist.kafka.errors import retry_condition
from alertdist.publish.publisher import PublishProgress, publish
from alertdist.kafka.signals import stop_on_signals
from alertdist.publish.sources import source_from_spec
from alertdist.nights.topics import TopicNaming, TopicSettings, parse_night, site_for_timezone


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_condition(), cache_policy=NO_CACHE)
def publish_source(source: str, night_text: str, bootstrap_servers: str, naming: TopicNaming, settings: Settings,
                   speed: float | None, check_night: bool, done_folder: str | None) -> dict:
    night = parse_night(night_text)
    total = int(source.split(":")[1]) if source.startswith("simulate:") else None
    key = re.sub(r"[^a-z0-9-]+", "-", f"{naming.survey}-{night_text}".lower())
    artifact = create_progress_artifact(0.0, key=f"publish-{key}", description=f"Publishing night {night_text}")

    def report(p: PublishProgress) -> None:
        try:  # the UI being down must never stop the night
            update_progress_artifact(artifact, min(100.0 * p.read / p.total, 100.0) if p.total else 0.0, description=(
                f"night {night_text}: read {p.read}, delivered {p.delivered}, rejected {p.rejected}, "
                f"failed {p.failed}, {p.rate:.0f} alerts/s"))
        except Exception as e:
            get_run_logger().warning("could not update the progress artifact: %s", e)

    stop = threading.Event()
    with stop_on_signals(stop):
        packets = source_from_spec(source, night=night, stop=stop, done_folder=done_folder, speed=speed,
                                   storage_options=settings.storage_options)
        result = publish(packets, bootstrap_servers=bootstrap_servers, naming=naming, night=night,
                         site=site_for_timezone(settings.site_timezone), stop=stop, check_night=check_night,
                         progress=report, progress_every_s=5.0, total=total)
    update_progress_artifact(artifact, 100.0, description=f"night {night_text}: {result.delivered_total} delivered")
    create_table_artifact(result.summary_rows(), key=f"publish-summary-{key}",
                          description=f"Night {night_text}: {'closed' if result.closed else 'left open'}")
    return {"night": result.night, "closed": result.closed, **result.counts(), "elapsed_s": result.elapsed_s,
            "rate_alerts_s": result.rate_alerts_s, "rate_mb_s": result.rate_mb_s, "latency_ms": result.latency_ms}


def _run_name() -> str:
    p = flow_run.parameters
    return f"publish-{p.get('night') or 'tonight'}-{str(p['source']).split(':')[0].rsplit('/', 1)[-1]}"


@flow(name="publish-night", flow_run_name=_run_name)
def publish_night(
    source: str,
    night: str | None = None,
    speed: float | None = None,
    check_night: bool = True,
    done_folder: str | None = None,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict:
    """Publish ``source`` into ``night`` (YYYYMMDD; default tonight at the site) and close the night."""
    settings = Settings.from_env()
    bootstrap = bootstrap_servers or settings.bootstrap_servers
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    night_text = night or f"{tonight(settings):%Y%m%d}"
    ensure_topics(bootstrap, naming, parse_night(night_text), TopicSettings(partitions=partitions))
    apply_night_acls(bootstrap, naming, parse_night(night_text))
    return publish_source(source, night_text, bootstrap, naming, settings, speed, check_night, done_folder)
