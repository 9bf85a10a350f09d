"""The one jd pacing (`alertdist.nights.pacing.pace_by_jd`): each exposure at its time in the night / speed."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from alertdist.nights.pacing import pace_by_jd

MINUTE_JD = 60 / 86400


class FakeTime:
    """A clock that only moves when slept on, so the waits are exact."""

    def __init__(self) -> None:
        self.now, self.slept = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_each_exposure_waits_for_its_time_divided_by_speed_and_late_items_go_at_once():
    alerts = [SimpleNamespace(jd=2460230.5 + m * MINUTE_JD) for m in (0, 0, 1, 3, 2)]  # the last one is late
    fake = FakeTime()
    out = list(pace_by_jd(alerts, 60.0, clock=fake.clock, sleep=fake.sleep))
    assert out == alerts
    assert fake.slept == [1.0, 2.0]  # a minute of night per second: +1 s, then +2 s; the late one waits not at all
    assert fake.now == pytest.approx(103.0)


def test_the_jd_comes_from_where_the_caller_says():
    items = [(2460230.5, "a"), (2460230.5 + 2 * MINUTE_JD, "b")]
    fake = FakeTime()
    assert [x for _, x in pace_by_jd(items, 120.0, jd=lambda i: i[0], clock=fake.clock, sleep=fake.sleep)] == ["a", "b"]
    assert fake.slept == [1.0]


def test_a_stop_while_waiting_ends_the_iteration_at_once():
    stop = threading.Event()
    items = [SimpleNamespace(jd=2460230.5), SimpleNamespace(jd=2460231.5)]  # a day apart: 24 h at speed 1
    paced = pace_by_jd(items, 1.0, stop=stop)
    assert next(paced) is items[0]
    threading.Timer(0.2, stop.set).start()
    assert list(paced) == []


def test_speed_must_be_positive():
    with pytest.raises(ValueError, match="speed must be positive"):
        list(pace_by_jd([SimpleNamespace(jd=1.0)], 0))
