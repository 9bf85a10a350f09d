"""Every metric the project exports, in Prometheus's conventions, and the cheap containers behind them.

Names carry the ``alertdist_`` prefix and base units (seconds, bytes), counters end in ``_total``, histograms of
durations share `SECONDS_BUCKETS` (10 ms to 60 s). Labels stay bounded: night, programme, filter, partition, a
reject kind or a consumer group, never a candid or an objectId.

The containers are plain dictionaries read by one `prometheus_client` collector at scrape time: an increment
is a dictionary update (no lock, no label lookup), and a histogram takes a whole batch at once
(`Histogram.observe_many`, numpy), so the publisher's and the filters' hot loops pay almost nothing. A hook
called often with the same labels binds them once (`Counter.child`, `Histogram.child`).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

__all__ = ["PREFIX", "SECONDS_BUCKETS", "Counter", "Gauge", "Histogram", "families", "family", "register"]

PREFIX = "alertdist_"
#: Upper bounds of the duration histograms: 10 ms to 60 s, roughly doubling.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
#: Label names a metric may carry: all bounded by configuration, never by the data.
ALLOWED_LABELS = frozenset(
    {"night", "programme", "filter", "partition", "reason", "outcome", "group", "topic", "cluster", "job"}
)

_families: dict[str, _Family] = {}
_lock = threading.Lock()


class _Family:
    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()):
        if not name.startswith(PREFIX):
            raise ValueError(f"metric {name!r} must start with {PREFIX!r}")
        unknown = set(labels) - ALLOWED_LABELS
        if unknown:
            raise ValueError(
                f"metric {name!r}: label(s) {sorted(unknown)} are not bounded; use {sorted(ALLOWED_LABELS)}"
            )
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        with _lock:
            if name in _families:
                raise ValueError(f"metric {name!r} is defined twice")
            _families[name] = self

    def collect(self):  # pragma: no cover - each kind has its own
        raise NotImplementedError


class Counter(_Family):
    """A monotonic count per label values; ``name`` ends in ``_total``."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()):
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        super().__init__(name, documentation, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def value(self, labels: tuple[str, ...] = ()) -> float:
        return self.values.get(labels, 0)

    def child(self, labels: tuple[str, ...]) -> CounterChild:
        """The series of ``labels``, bound once: its `inc` builds no label tuple."""
        return CounterChild(self.values, labels)

    def collect(self):
        family = CounterMetricFamily(self.name.removesuffix("_total"), self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class Gauge(_Family):
    """A value that goes up and down; a label set can be backed by a function read at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()):
        super().__init__(name, documentation, labels)
        self.values: dict[tuple[str, ...], float | Callable[[], float]] = {}

    def set(self, labels: tuple[str, ...], value: float | Callable[[], float]) -> None:
        self.values[labels] = value

    def remove(self, labels: tuple[str, ...]) -> None:
        self.values.pop(labels, None)

    def replace_all(self, values: dict[tuple[str, ...], float]) -> None:
        """Set exactly these label sets (series no longer measured disappear)."""
        self.values = dict(values)

    def value(self, labels: tuple[str, ...] = ()) -> float | None:
        value = self.values.get(labels)
        return value() if callable(value) else value

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            try:
                family.add_metric(list(labels), float(value() if callable(value) else value))
            except Exception:  # a source that went away: no sample rather than a failed scrape
                continue
        return family


class Histogram(_Family):
    """Counts per bucket; `observe_many` takes a batch in one numpy pass."""

    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = SECONDS_BUCKETS
    ):
        super().__init__(name, documentation, labels)
        self.bounds = np.asarray(sorted(buckets), dtype=float)
        self._bounds = [float(b) for b in self.bounds]  # bisect on a list: a scalar costs no numpy call
        self.series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts (len+1: +Inf), sum]

    def _series(self, labels):
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [np.zeros(len(self.bounds) + 1, dtype=np.int64), 0.0]
        return series

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series(labels)
        series[0][bisect.bisect_left(self._bounds, value)] += 1  # le is inclusive, as np.searchsorted "left"
        series[1] += value

    def child(self, labels: tuple[str, ...]) -> HistogramChild:
        """The series of ``labels``, bound once (a hook called per transaction looks nothing up)."""
        return HistogramChild(self._bounds, self._series(labels))

    def observe_many(self, labels: tuple[str, ...], values: Iterable[float] | np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        if values.size == 0:
            return
        series = self._series(labels)
        series[0] += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1)
        series[1] += float(values.sum())

    def count(self, labels: tuple[str, ...] = ()) -> int:
        series = self.series.get(labels)
        return int(series[0].sum()) if series is not None else 0

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (counts, total) in list(self.series.items()):
            cumulative = np.cumsum(counts)
            buckets = [(_bound(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1])]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        return family


class CounterChild:
    """One series of a `Counter`, its labels bound."""

    __slots__ = ("key", "values")

    def __init__(self, values: dict, key: tuple[str, ...]):
        self.values, self.key = values, key

    def inc(self, amount: float = 1) -> None:
        self.values[self.key] = self.values.get(self.key, 0) + amount


class HistogramChild:
    """One series of a `Histogram`, its labels bound."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: list[float], series: list):
        self.bounds, self.series = bounds, series

    def observe(self, value: float) -> None:
        series = self.series
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1] += value


def _bound(value: float) -> str:
    return repr(float(value))


def family(name: str) -> _Family:
    """The metric family named ``name`` (KeyError if none)."""
    return _families[name]


def families() -> list[_Family]:
    return list(_families.values())


class _Collector(Collector):
    def describe(self):  # names are checked by `_Family`, not by collecting everything at registration
        return []

    def collect(self):
        for item in families():
            yield item.collect()


_registered = False


def register(registry=REGISTRY) -> None:
    """Expose every family through ``registry`` (prometheus_client's default: with the process metrics); once."""
    global _registered
    with _lock:
        if not _registered:
            registry.register(_Collector())
            _registered = True
