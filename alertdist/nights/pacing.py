"""A night's own cadence, replayed faster: the one place that holds items back until their exposure's time.

ZTF releases an exposure's alerts together, exposures ~40 s apart. With ``speed`` each item is held until its
exposure's time in the night (its ``jd`` after the first item's) divided by ``speed``; an item that comes later
than its time (out of order) goes at once. The publisher's simulated source, the replay and the simulator's drop
folder writer all pace this way, so they share this function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import TypeVar

__all__ = ["pace_by_jd"]

T = TypeVar("T")

_SECONDS_PER_DAY = 86400.0
_EARLY_S = 0.0005  # a wait shorter than this is not worth a sleep


def pace_by_jd(
    items: Iterable[T],
    speed: float,
    *,
    jd: Callable[[T], float] = attrgetter("jd"),
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[T]:
    """Yield each item of ``items`` once ``(jd(item) - jd(first)) * 86400 / speed`` seconds have passed since the first.

    ``stop`` ends the iteration at once, also while waiting (then the wait is ``stop.wait``, not ``sleep``);
    ``clock`` and ``sleep`` are for tests.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive (e.g. 60: a minute of night per second), got {speed}")
    start = first_jd = None
    for item in items:
        when = jd(item)
        if first_jd is None:
            start, first_jd = clock(), when
        delay = start + (when - first_jd) * _SECONDS_PER_DAY / speed - clock()
        if delay > _EARLY_S:
            if stop is None:
                sleep(delay)
            elif stop.wait(delay):
                return
        if stop is not None and stop.is_set():
            return
        yield item
