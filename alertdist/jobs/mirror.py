"""The two-tier mode's operations: run MirrorMaker 2 from the producing cluster to the public one, wait for a
night's topics downstream, and close a night downstream. The CLI and the Prefect tasks call these."""

from __future__ import annotations

import datetime as dt
import threading

from confluent_kafka import KafkaException

from alertdist.jobs.progress import NoProgress, Progress
from alertdist.jvm import announce
from alertdist.kafka.clients import admin_client
from alertdist.kafka.errors import KafkaOperationError, retry_until
from alertdist.mirror import closing, process
from alertdist.mirror.config import MirrorSpec, mirrored_topics
from alertdist.mirror.connect_status import MirrorUnit, mirror_units
from alertdist.mirror.syncs import next_unmirrored, read_offset_syncs
from alertdist.nights.dates import format_night
from alertdist.nights.state import NightState
from alertdist.nights.topics import TopicsError, replication_for
from alertdist.security import ADMIN, MIRROR, secure_night
from alertdist.settings import Settings

__all__ = [
    "close_night_downstream",
    "keep_mirror_running",
    "mirror_home",
    "mirror_position",
    "mirror_spec",
    "mirror_units_now",
    "secure_night_downstream",
    "start_mirror",
    "wait_for_mirrored_topics",
]


def mirror_home(settings: Settings) -> process.MirrorHome:
    """MirrorMaker 2's properties, pid and log in ``<home>/mirror``, running the project's jars."""
    jmx = None if settings.mirror_jmx_port < 0 else settings.mirror_jmx_port or settings.mirror_rest_port + 50
    return process.MirrorHome(settings.home / "mirror", settings.kafka_home / "libs", jmx_port=jmx)


def mirror_spec(settings: Settings, night: dt.date | None = None) -> MirrorSpec:
    """The mirror the settings describe: producing -> public, every night's programme topics (or ``night``'s)
    and the nights topic, the internal REST on ``mirror_rest_port``, replication as the public cluster allows; on
    secured clusters it logs in to each as the mirror."""
    return MirrorSpec(
        source=settings.kafka(MIRROR),
        target=settings.public_kafka(MIRROR),
        topics=mirrored_topics(settings.naming, night),
        rest_port=settings.mirror_rest_port,
        replication=replication_for(admin_client(settings.public_kafka(ADMIN)), None),
    )


def mirror_position(settings: Settings) -> dict[tuple[str, int], int]:
    """Where MirrorMaker 2 has got to upstream, from its offset syncs: (topic, partition) -> the first offset not
    yet known to be mirrored (the lag monitor's mirror lag)."""
    return next_unmirrored(read_offset_syncs(settings.kafka(ADMIN), timeout=5))


def mirror_units_now(settings: Settings) -> list[MirrorUnit]:
    """MirrorMaker's connectors and current tasks as they last reported (Connect's status topic, public cluster)."""
    return mirror_units(settings.public_kafka(ADMIN))


def start_mirror(settings: Settings, night: dt.date | None = None) -> process.MirrorStatus:
    """Start MirrorMaker 2 (reused when already running)."""
    home = mirror_home(settings)
    if home.jmx_port is not None:  # where the project's Prometheus finds MirrorMaker's JMX metrics
        announce(settings.prometheus_home / "jmx-targets", "mirror", home.jmx_port, {"job": "mirror"})
    return process.start(home, mirror_spec(settings, night))


def keep_mirror_running(
    settings: Settings,
    stop: threading.Event,
    *,
    every_s: float = 30.0,
    progress: Progress = NoProgress(),
    attempts: int = 3,
) -> int:
    """Run MirrorMaker 2 until ``stop`` is set, starting it again whenever it died (exactly once: a restart
    resumes from the offsets its last transaction committed); then stop it. Returns how often it was restarted.
    A start that fails (it died while starting) is tried again at the next check, up to ``attempts`` in a row.
    A connector or task that reports FAILED (it copies nothing while the process lives on) is shown each check."""
    home, restarts, failures = mirror_home(settings), -1, 0
    try:
        while not stop.is_set():
            if process.status(home).running:
                _show_failed_units(settings, progress)
            else:
                restarts += 1
                progress.update(f"{'restarting' if restarts else 'starting'} MirrorMaker 2", final=True)
                try:
                    start_mirror(settings)
                    failures = 0
                except process.MirrorError as e:
                    failures += 1
                    if failures >= attempts:
                        raise
                    progress.update(f"MirrorMaker 2 did not start ({failures} of {attempts}): {e}", final=True)
            stop.wait(every_s)
    finally:
        process.stop(home)
    progress.update(f"MirrorMaker 2 stopped ({max(restarts, 0)} restart(s))", final=True)
    return max(restarts, 0)


def _show_failed_units(settings: Settings, progress: Progress) -> None:
    try:
        failed = [u for u in mirror_units_now(settings) if u.failed]
    except (KafkaException, KafkaOperationError) as e:  # the public cluster is away: the mirror keeps running
        progress.update(f"could not read MirrorMaker's task states: {e}", final=True)
        return
    if failed:
        progress.update("; ".join(map(str, failed)), final=True)


def _topics_there(bootstrap: str, topics: list[str]) -> None:
    found = admin_client(bootstrap).list_topics(timeout=10).topics
    missing = [t for t in topics if t not in found or found[t].error is not None]
    if missing:
        raise TopicsError(f"not mirrored yet: {', '.join(missing)}", transient=True)


def wait_for_mirrored_topics(settings: Settings, night: dt.date, *, timeout: float = 120.0) -> list[str]:
    """Until the night's programme topics and the nights topic exist on the public cluster (MirrorMaker creates
    them, with the producing cluster's partitions and settings, within seconds of their creation upstream)."""
    topics = [*settings.naming.programme_topics(night).values(), settings.naming.nights_topic]
    retry_until(
        "waiting for the night's topics on the public cluster",
        _topics_there,
        settings.public_kafka(ADMIN),
        topics,
        timeout_s=timeout,
        delay_s=1.0,
    )
    return topics


def secure_night_downstream(settings: Settings, night: dt.date) -> int:
    """Apply the night's ACLs on the public cluster for the users registered there (its readers, filters, archiver
    and the mirror), before the night's topics exist upstream: MirrorMaker creates them downstream within seconds,
    and needs its rights on them by then. Returns the ACLs applied (0 on an open public cluster)."""
    return secure_night(settings.public_kafka(ADMIN), settings.naming, night)


def close_night_downstream(
    settings: Settings,
    night: dt.date,
    *,
    progress: Progress = NoProgress(),
    stop: threading.Event | None = None,
    timeout: float | None = None,
) -> NightState:
    """Close ``night`` on the public cluster once all of it has arrived, showing the mirror's lag as it goes."""

    def lag(n: int) -> None:
        progress.update(f"mirror lag {n} alerts (night {format_night(night)})")

    state = closing.close_downstream(
        settings.kafka(ADMIN),
        settings.public_kafka(ADMIN),
        settings.naming,
        night,
        stop=stop,
        timeout=timeout,
        lag=lag,
    )
    progress.update(
        f"night {format_night(night)} closed on the public cluster ({state.total_messages()} alerts)", 1.0, final=True
    )
    return state
