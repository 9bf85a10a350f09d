"""The monitor process (`alertdist lag serve`): every few seconds it measures every consumer group's lag, reads
the nights' states and sends and reads back the heartbeat, and exports it all with its own HTTP exposition.

One failed round (a broker restarting) is counted and logged, never the end of the monitor: an operator's
monitor must outlive what it watches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from alertdist.metrics import lag, nights
from alertdist.metrics.heartbeat import HEARTBEAT_AGE, Heartbeat, heartbeat_age, heartbeat_topic
from alertdist.metrics.mirror_lag import export_mirror_lag
from alertdist.nights.dates import Site
from alertdist.nights.topics import TopicNaming

__all__ = ["MonitorConfig", "run_monitor"]

_log = logging.getLogger("alertdist.metrics.monitor")


@dataclass(frozen=True)
class MonitorConfig:
    bootstrap_servers: str
    naming: TopicNaming
    site: Site
    public_bootstrap_servers: str | None = None  # the two-tier mode's public cluster: its heartbeat age too
    interval_s: float = 5.0
    groups: str = ".*"
    heartbeat: bool = True
    # two-tier: where the mirror has got to upstream, (topic, partition) -> first offset not yet mirrored
    mirrored: Callable[[], dict[tuple[str, int], int]] | None = None


def run_monitor(config: MonitorConfig, stop: threading.Event, *, rounds: int | None = None) -> int:
    """Measure until ``stop`` is set (or ``rounds`` rounds are done); returns the rounds done."""
    monitor = lag.LagMonitor(config.bootstrap_servers, groups=config.groups)
    topic = heartbeat_topic(config.naming.survey)
    sender = None
    done = 0
    try:
        while not stop.is_set() and (rounds is None or done < rounds):
            started = time.monotonic()
            try:
                if config.heartbeat:
                    sender = sender or Heartbeat(config.bootstrap_servers, topic)
                    sender.beat()
                lag.export(monitor.measure())
                if config.mirrored is not None:
                    export_mirror_lag(monitor, config.mirrored())
                nights.export_nights(config.bootstrap_servers, config.naming, config.site)
                clusters = {"producing": config.bootstrap_servers}
                if config.public_bootstrap_servers:
                    clusters["public"] = config.public_bootstrap_servers
                for name, servers in clusters.items():
                    age = heartbeat_age(servers, topic, timeout=5)
                    if age is None:
                        HEARTBEAT_AGE.remove((name,))
                    else:
                        HEARTBEAT_AGE.set((name,), age)
            except Exception as e:
                lag.MEASURE_ERRORS.inc()
                _log.warning("monitor round failed (next in %.0f s): %s", config.interval_s, e)
            done += 1
            stop.wait(max(config.interval_s - (time.monotonic() - started), 0.1))
    finally:
        monitor.close()
    return done
