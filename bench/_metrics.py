"""Metrics on against off in the same run: the hooks switched (`alertdist.metrics.catalog.set_enabled`) and, when
on, this process's exposition scraped every second (five times Prometheus's rate here), so the figure includes
what a scrape costs the process."""

from __future__ import annotations

import contextlib
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


def overhead(off: list[float], on: list[float]) -> float:
    """Throughput lost with metrics on: 1 - best(on) / best(off), from interleaved rounds."""
    return round(1 - max(on) / max(off), 4)


def cpu_overhead(off: list[float], on: list[float]) -> float:
    """CPU spent with metrics on over off, less one, for the same work per round (least disturbed round of each)."""
    return round(min(on) / min(off) - 1, 4)
