"""The mirror's lag as Prometheus sees it (two-tier mode): per mirrored topic, the upstream records MirrorMaker 2
has not yet mirrored, and the age of the oldest of them, so a stopped mirror is seen even when MirrorMaker's own
JMX metrics went away with it.

Where the mirror has got to comes from its offset syncs (`alertdist.mirror.syncs.next_unmirrored`, read by the
caller: the mirror's layer sits above this one), measured like a consumer group's position (`LagMonitor.lags`).
"""

from __future__ import annotations

import time

from alertdist.metrics.lag import LagMonitor
from alertdist.metrics.registry import Gauge

__all__ = ["MIRROR_LAG_MESSAGES", "MIRROR_LAG_SECONDS", "export_mirror_lag"]

MIRROR_LAG_MESSAGES = Gauge(
    "alertdist_mirror_lag_messages",
    "Upstream records of a mirrored topic not yet known to be on the public cluster (offset syncs trail by up to "
    "offset.lag.max records per partition while the mirror copies; exact once it is idle).",
    ["topic"],
)
MIRROR_LAG_SECONDS = Gauge(
    "alertdist_mirror_lag_seconds",
    "Age of the oldest upstream record of a mirrored topic not yet known to be on the public cluster (0: none).",
    ["topic"],
)


def export_mirror_lag(
    monitor: LagMonitor, next_unmirrored: dict[tuple[str, int], int], now: float | None = None
) -> None:
    """Set the mirror lag gauges, per topic, from ``next_unmirrored`` ((topic, partition) -> the first upstream
    offset not yet mirrored), measured on the producing cluster through ``monitor``."""
    now = time.time() if now is None else now
    messages: dict[tuple[str, ...], float] = {}
    seconds: dict[tuple[str, ...], float] = {}
    for x in monitor.lags({"mirror": next_unmirrored}):
        messages[(x.topic,)] = messages.get((x.topic,), 0) + x.messages
        seconds[(x.topic,)] = max(seconds.get((x.topic,), 0.0), x.seconds(now))
    MIRROR_LAG_MESSAGES.replace_all(messages)
    MIRROR_LAG_SECONDS.replace_all(seconds)
