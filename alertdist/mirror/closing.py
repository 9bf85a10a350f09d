"""Closing a night on the public cluster, with the public cluster's own offsets, once all of it has arrived.

Offsets differ between the clusters (exactly-once mirroring adds a transaction marker per batch), so the
producing cluster's closing record cannot be used downstream: mirrored there, it reads as ``mirrored``. This
module waits until the producing cluster has closed the night, MirrorMaker's offset syncs show the last record
of every partition committed downstream, and the mirrored closing record has arrived (so it cannot land on top
of the public one); then it writes the public closing record: each partition's end just past the downstream
offset of its last record, and its message count (the upstream one: exactly once, nothing lost or repeated).
Filters and the archiver on the public cluster stop on it as they do on a single cluster.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from alertdist.kafka.errors import KafkaOperationError
from alertdist.mirror.syncs import OffsetSyncs, mirror_lag, read_offset_syncs
from alertdist.nights.dates import format_night
from alertdist.nights.state import (
    MIRRORED,
    NightState,
    NightStateError,
    end_offsets,
    mark_night,
    read_night_state,
)
from alertdist.nights.topics import TopicNaming

__all__ = ["MirrorNotDone", "close_downstream"]


class MirrorNotDone(KafkaOperationError):
    """The night did not arrive downstream in time (or was stopped); transient: the mirror may catch up."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


def _pending(ends: dict[str, dict[int, int]], syncs: OffsetSyncs) -> list[str]:
    """Partitions whose last upstream record has no sync yet."""
    return [
        f"{t}[{p}]"
        for t, parts in ends.items()
        for p, end in parts.items()
        if end and syncs.get((t, p), (-1,))[0] != end - 1
    ]


def close_downstream(
    upstream: str,
    downstream: str,
    naming: TopicNaming,
    night: dt.date,
    *,
    stop: threading.Event | None = None,
    timeout: float | None = None,
    poll_s: float = 1.0,
    lag: Callable[[int], None] = lambda _: None,
) -> NightState:
    """Close ``night`` on ``downstream`` once it is closed on ``upstream`` and all of it has arrived (idempotent: a
    night already closed downstream is returned as it is). ``lag(n)`` hears the mirror's lag all night long."""
    deadline = None if timeout is None else time.monotonic() + timeout
    topics = list(naming.programme_topics(night).values())
    while True:
        here = read_night_state(downstream, naming, night)
        if here is not None and here.ended:  # closed, or aborted as upstream was
            return here
        closed = read_night_state(upstream, naming, night)
        closed = closed if closed is not None and closed.ended else None
        ends = {t: p for t, p in closed.end_offsets.items() if t in topics} if closed else _ends_now(upstream, topics)
        syncs = read_offset_syncs(upstream)
        lag(mirror_lag(ends, syncs))
        pending = _pending(ends, syncs)
        if closed is not None and not pending and here is not None and here.state == MIRRORED:
            break
        if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline):
            waiting = "its close on the producing cluster" if closed is None else ", ".join(pending[:5])
            raise MirrorNotDone(
                f"night {format_night(night)} has not fully arrived downstream; still waiting for "
                f"{waiting or f'the closing record in {naming.nights_topic}'}"
            )
        time.sleep(poll_s)
    state = NightState(
        closed.night,
        closed.state,  # closed, or aborted: not whole downstream either
        {t: {p: syncs[(t, p)][1] + 1 if end else 0 for p, end in parts.items()} for t, parts in ends.items()},
        {**closed.counts, "mirrored_from": closed.cluster},
        messages=ends,  # the producing cluster's offsets are contiguous from 0: its ends are the counts
    )
    return mark_night(downstream, naming, state)


def _ends_now(upstream: str, topics: list[str]) -> dict[str, dict[int, int]]:
    """Where the night's topics end now upstream (the night still open): the lag while it goes on."""
    try:
        return end_offsets(upstream, topics)
    except NightStateError:
        return {}  # the night's topics are not created yet
