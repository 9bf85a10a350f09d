"""SIGINT/SIGTERM stop a long-running loop through an event instead of killing the process."""

from __future__ import annotations

import os
import signal
import threading
import time

from alertdist.kafka.signals import stop_on_signals


def _delivered(stop: threading.Event) -> bool:
    deadline = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
    return stop.is_set()


def test_a_signal_inside_the_block_sets_the_event_it_hands_out_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert _delivered(stop)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_given_event_is_the_one_set():
    mine = threading.Event()
    with stop_on_signals(mine) as stop:
        assert stop is mine
        os.kill(os.getpid(), signal.SIGINT)
        assert _delivered(mine)
