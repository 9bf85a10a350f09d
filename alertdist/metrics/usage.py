"""What a stage of a night cost the process it ran in: CPU time and peak memory, for the night's stage table.

A process of the night's pool may run one stage after another (the archiver after the publisher), so the peak
is reset when a stage starts (Linux: ``5`` into ``/proc/self/clear_refs``); where that is refused, the peak is
the process's whole life.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["process_usage"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def process_usage() -> Iterator[dict]:
    """A dict filled when the block ends: ``pid``, ``wall_s``, ``cpu_s`` (all threads) and ``peak_rss_mb``."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    usage, start, started = {"pid": os.getpid()}, _cpu_s(), time.monotonic()
    try:
        yield usage
    finally:
        wall_s, cpu_s = time.monotonic() - started, _cpu_s() - start
        usage.update(wall_s=round(wall_s, 2), cpu_s=round(cpu_s, 2), peak_rss_mb=round(_peak_rss_mb(), 1))
