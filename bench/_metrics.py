"""Metrics on against off in the same run: the hooks switched (`alertdist.metrics.catalog.set_enabled`) and, when
on, this process's exposition scraped every second (five times Prometheus's rate here), so the figure includes
what a scrape costs the process."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import urllib.request

from alertdist.metrics import catalog
from alertdist.metrics.exposition import expose


class Cost:
    """The process CPU (all threads) a round used: on a shared machine it moves far less than the wall rate."""

    cpu_s = 0.0


@contextlib.contextmanager
def metrics(on: bool, every_s: float = 1.0):
    cost = Cost()
    started = time.process_time()
    catalog.set_enabled(on)
    stop = threading.Event()
    scraper = None
    if on:
        url = expose("bench", None).url

        def scrape() -> None:
            while not stop.wait(every_s):
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
                    response.read()

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
    try:
        yield cost
    finally:
        stop.set()
        if scraper is not None:
            scraper.join(10)
        catalog.set_enabled(True)
        cost.cpu_s = time.process_time() - started


#: Fewest interleaved off/on pairs whose median is reported (one pair is all noise on a shared machine).
MIN_PAIRS = 3


def overhead(off: list[float], on: list[float]) -> float:
    """Throughput lost with metrics on: 1 - rate on / rate off of each interleaved pair (off then on, so drift on
    the machine hits both alike), the median over the pairs."""
    if len(off) != len(on) or len(on) < MIN_PAIRS:
        raise ValueError(f"metrics overhead needs >= {MIN_PAIRS} off/on pairs, got {len(off)}/{len(on)} rounds")
    return round(statistics.median(1 - b / a for a, b in zip(off, on)), 4)


def check_pairs(parser, pairs: int) -> None:
    """Refuse a --metrics-rounds that cannot give a median of pairs (argparse's error: the usage and the fix)."""
    if 0 < pairs < MIN_PAIRS:
        parser.error(f"--metrics-rounds must be 0 (skip) or at least {MIN_PAIRS} (off/on pairs; their median counts)")


def cpu_overhead(off: list[float], on: list[float]) -> float:
    """CPU spent with metrics on over off, less one, for the same work per round (least disturbed round of each)."""
    return round(min(on) / min(off) - 1, 4)
