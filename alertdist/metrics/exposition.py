"""Each process serves its metrics over HTTP and announces where, for Prometheus's file-based discovery.

A process listens on ``127.0.0.1:<port>`` (0: a free port) and writes ``<targets>/<job>-<pid>.json`` in the
``file_sd`` format, removed when it exits; Prometheus (`alertdist prometheus start`) watches that folder, so a
filter copy started at any time on any port is scraped without configuration. Files of processes that died
without removing theirs are pruned by the next process that announces itself.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import REGISTRY, start_http_server

from alertdist.metrics import catalog, registry

__all__ = ["Exposition", "expose", "prune_targets"]

_JOB = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")


@dataclass(frozen=True)
class Exposition:
    job: str
    port: int
    target_file: Path | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


class _Refresh:
    """A collector that brings scrape-time values up to date before the families are read, and counts scrapes."""

    scrapes = 0
    scraped = threading.Condition()

    def describe(self):  # registering must not count as a scrape
        return []

    def collect(self):
        catalog.refresh()
        with self.scraped:
            _Refresh.scrapes += 1
            self.scraped.notify_all()
        return []


def _linger(target_file: Path, timeout: float) -> None:
    """At exit, a process Prometheus has been scraping waits (up to ``timeout``) for one more scrape, so a short
    run's final counts are kept; then it withdraws its announcement."""
    with _Refresh.scraped:
        seen = _Refresh.scrapes
        answered = seen and _Refresh.scraped.wait_for(lambda: _Refresh.scrapes > seen, timeout)
    if answered:  # counted as the scrape begins: give the server thread time to send the answer
        time.sleep(1.0)
    target_file.unlink(missing_ok=True)


_current: Exposition | None = None


def expose(
    job: str, targets: Path | None, *, port: int = 0, host: str = "127.0.0.1", linger_s: float = 10.0
) -> Exposition:
    """Serve this process's metrics on ``host:port`` (0: a free port) and, with ``targets``, announce it there.

    At exit, a process that has been scraped waits up to ``linger_s`` for a last scrape (its final counts).
    Once per process: a second call returns the first exposition."""
    global _current
    if _current is not None:
        return _current
    if not _JOB.match(job):
        raise ValueError(f"job name {job!r} must be lower-case letters, digits, - or _")
    REGISTRY.register(_Refresh())
    registry.register(REGISTRY)
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    target_file = None
    if targets is not None:
        targets.mkdir(parents=True, exist_ok=True)
        prune_targets(targets)
        target_file = targets / f"{job}-{os.getpid()}.json"
        body = [{"targets": [f"{host}:{bound}"], "labels": {"job": job}}]
        scratch = target_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(body))
        scratch.replace(target_file)  # Prometheus never reads half a file
        atexit.register(_linger, target_file, linger_s)
    _current = Exposition(job, bound, target_file)
    return _current


def prune_targets(targets: Path) -> int:
    """Remove announcements of processes no longer alive; returns how many."""
    removed = 0
    for path in targets.glob("*-*.json"):
        try:
            pid = int(path.stem.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            removed += 1
        except PermissionError:
            continue
    return removed
