"""Stop long-running Kafka loops on SIGINT/SIGTERM instead of dying inside them (loops then close cleanly)."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event | None = None, signals=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, SIGINT/SIGTERM set ``stop`` (a new event unless given) instead of killing the process
    (main thread only); ``with stop_on_signals() as stop:`` hands the event to the loop it stops."""
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
