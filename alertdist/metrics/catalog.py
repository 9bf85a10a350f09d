"""The metrics of each stage, and the one-line hooks the stages call (publisher, live filters, archiver, replay).

Hooks take what the stage already counts, so a stage adds a line, not bookkeeping: the publisher hands over its
run once (`track_publisher`) and is read at scrape time; a filter copy reports each committed transaction and
each consumed batch.
"""

from __future__ import annotations

import operator
import time
from typing import ClassVar

import numpy as np

from alertdist.metrics.registry import Counter, Gauge, Histogram

__all__ = [
    "archive_finished",
    "archive_started",
    "filter_batch_consumed",
    "filter_transaction_committed",
    "set_enabled",
    "track_publisher",
    "track_replay",
]

# ------------------------------------------------------------------------------------------------ publisher
PUBLISHER_READ = Counter("alertdist_publisher_packets_read_total", "Packets the publisher read.", ["night"])
PUBLISHER_DELIVERED = Counter(
    "alertdist_publisher_packets_delivered_total",
    "Packets Kafka acknowledged on their programme topic.",
    ["night", "programme"],
)
PUBLISHER_REJECTED = Counter(
    "alertdist_publisher_packets_rejected_total",
    "Packets set aside on the rejected topic, by reject kind.",
    ["night", "reason"],
)
PUBLISHER_FAILED = Counter(
    "alertdist_publisher_deliveries_failed_total", "Deliveries Kafka refused after its retries.", ["night"]
)
PUBLISHER_BYTES = Counter(
    "alertdist_publisher_delivered_bytes_total", "Bytes of packets acknowledged on programme topics.", ["night"]
)
PUBLISHER_LATENCY = Histogram(
    "alertdist_publisher_produce_latency_seconds",
    "From the packet's production (or its read) to Kafka's acknowledgement.",
    ["night"],
)
PUBLISHER_QUEUE = Gauge(
    "alertdist_publisher_queue_depth_packets", "Packets sent but not yet acknowledged by Kafka.", ["night"]
)

# ------------------------------------------------------------------------------------------------- filters
FILTER_ALERTS = Counter(
    "alertdist_filter_alerts_total",
    "Alerts a live filter copy committed, by outcome (passed, rejected, error, malformed).",
    ["night", "filter", "outcome"],
)
FILTER_TRANSACTION = Histogram(
    "alertdist_filter_transaction_seconds",
    "A live filter's transaction, from its first alert to its commit.",
    ["night", "filter"],
)
FILTER_TRANSACTIONS = Counter(
    "alertdist_filter_transactions_total", "Transactions a live filter committed.", ["night", "filter"]
)
END_TO_END = Histogram(
    "alertdist_end_to_end_latency_seconds",
    "From the publisher's produce time (the record's timestamp) to the moment a live filter reads the alert.",
    ["filter"],
)

# ------------------------------------------------------------------------------------------------- archive
ARCHIVE_RUNS = Counter(
    "alertdist_archive_runs_total", "Archive runs that ended, by outcome (verified, failed).", ["night", "outcome"]
)
ARCHIVE_LAST_SUCCESS = Gauge(
    "alertdist_archive_last_success_timestamp_seconds",
    "When a night's archive was last written and verified.",
    ["night"],
)

# -------------------------------------------------------------------------------------------------- replay
REPLAY_DELIVERED = Counter(
    "alertdist_replay_packets_delivered_total", "Archived alerts a replay had acknowledged on its topic.", ["topic"]
)
REPLAY_QUEUE = Gauge("alertdist_replay_queue_depth_packets", "Replayed alerts not yet acknowledged.", ["topic"])


#: Metrics are always on; benchmarks turn every hook off to measure what they cost (`set_enabled`; a stage's
#: settings do it with ``ALERTDIST_METRICS=0``, see `alertdist.jobs.metrics.serve_metrics`).
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn every stage's hooks on or off (benchmarks: metrics on against off in one run)."""
    global _enabled
    _enabled = enabled


def track_publisher(night: str, run) -> None:
    """Export a publisher run's own counts, read at scrape time: nothing is added to its per-packet path.

    ``run`` is the publisher's run state (its ``result``, ``delivered`` and ``rejected`` counters, its
    ``latencies`` in ms and its producer ``out``). A later run of the same night adds to the earlier one's totals,
    so the counters never go back."""
    if _enabled:
        _PublisherSource.track(night, run)


class _PublisherSource:
    """Base totals of finished runs plus the live run, per night."""

    runs: ClassVar[dict[str, object]] = {}
    base: ClassVar[dict[str, dict]] = {}
    seen_latencies: ClassVar[dict[str, int]] = {}

    @classmethod
    def track(cls, night: str, run) -> None:
        previous = cls.runs.get(night)
        if previous is not None:
            cls.refresh(night)
            cls.base[night] = cls.totals(night)
        cls.runs[night] = run
        cls.seen_latencies[night] = 0
        PUBLISHER_QUEUE.set((night,), lambda: len(run.out))

    @classmethod
    def totals(cls, night: str) -> dict:
        return {
            "read": PUBLISHER_READ.value((night,)),
            "bytes": PUBLISHER_BYTES.value((night,)),
            "failed": PUBLISHER_FAILED.value((night,)),
            "delivered": {k[1]: v for k, v in PUBLISHER_DELIVERED.values.items() if k[0] == night},
            "rejected": {k[1]: v for k, v in PUBLISHER_REJECTED.values.items() if k[0] == night},
        }

    @classmethod
    def refresh(cls, night: str) -> None:
        run = cls.runs[night]
        base = cls.base.get(night, {})
        key = (night,)
        PUBLISHER_READ.values[key] = base.get("read", 0) + run.result.read
        PUBLISHER_BYTES.values[key] = base.get("bytes", 0) + run.result.bytes_delivered
        PUBLISHER_FAILED.values[key] = base.get("failed", 0) + run.out.failed
        for programme, n in list(run.delivered.items()):
            PUBLISHER_DELIVERED.values[(night, str(programme))] = base.get("delivered", {}).get(str(programme), 0) + n
        for kind, n in list(run.rejected.items()):
            PUBLISHER_REJECTED.values[(night, kind)] = base.get("rejected", {}).get(kind, 0) + n
        latencies = run.latencies
        seen, upto = cls.seen_latencies[night], len(latencies)
        if upto > seen:
            PUBLISHER_LATENCY.observe_many(key, np.frombuffer(latencies, dtype=np.int64)[seen:upto] / 1000.0)
            cls.seen_latencies[night] = upto

    @classmethod
    def refresh_all(cls) -> None:
        for night in list(cls.runs):
            try:
                cls.refresh(night)
            except Exception:  # a run's shape changed: its series stay at their last values
                continue


def refresh() -> None:
    """Bring values read at scrape time up to date (the exposition calls it before each scrape)."""
    _PublisherSource.refresh_all()
    _refresh_replays()


def filter_transaction_committed(night: str, filter_name: str, counts: dict[str, int], started: float) -> None:
    """A live filter copy committed a transaction holding ``counts`` (outcome -> alerts), begun at ``started``
    (`time.monotonic`)."""
    if not _enabled:
        return
    bound = _filter_series.get((night, filter_name)) or _FilterSeries.bind(night, filter_name)
    for outcome, n in counts.items():
        if n:
            bound.alerts(outcome).inc(n)
    bound.transactions.inc()
    bound.transaction_s.observe(time.monotonic() - started)


class _FilterSeries:
    """A filter copy's series, their labels bound once per night (the hook runs per transaction)."""

    def __init__(self, night: str, filter_name: str):
        self.key = (night, filter_name)
        self.outcomes: dict[str, object] = {}
        self.transactions = FILTER_TRANSACTIONS.child(self.key)
        self.transaction_s = FILTER_TRANSACTION.child(self.key)

    def alerts(self, outcome: str):
        child = self.outcomes.get(outcome)
        if child is None:
            child = self.outcomes[outcome] = FILTER_ALERTS.child((*self.key, outcome))
        return child

    @classmethod
    def bind(cls, night: str, filter_name: str) -> _FilterSeries:
        bound = _filter_series[(night, filter_name)] = cls(night, filter_name)
        return bound


_filter_series: dict[tuple[str, str], _FilterSeries] = {}


def filter_batch_consumed(filter_name: str, messages) -> None:
    """End-to-end latency of a consumed batch: now less each record's produce timestamp (ms). An error event
    carries no timestamp (0 or -1) and is left out."""
    if not _enabled:
        return
    now_ms = time.time() * 1000.0
    stamps = np.array([t for _, t in map(_timestamp, messages)], dtype=float)
    stamps = stamps[stamps > 0]
    if stamps.size:
        END_TO_END.observe_many((filter_name,), (now_ms - stamps) / 1000.0)


_timestamp = operator.methodcaller("timestamp")


def archive_started(night: str) -> None:
    """An archive run of ``night`` begins: its failure count exists (at 0) before any failure, so the alert rule's
    ``increase`` sees the step to 1."""
    if _enabled:
        ARCHIVE_RUNS.inc((night, "failed"), 0)


def archive_finished(night: str, ok: bool) -> None:
    """An archive run of ``night`` ended: verified, or failed (the alert rule counts failures)."""
    if not _enabled:
        return
    ARCHIVE_RUNS.inc((night, "verified" if ok else "failed"))
    if ok:
        ARCHIVE_LAST_SUCCESS.set((night,), time.time())


_replays: dict[str, list] = {}


def track_replay(topic: str, out) -> None:
    """Export a replay's producer counts (``delivered``, queue length), read at scrape time."""
    if not _enabled:
        return
    producers = _replays.setdefault(topic, [])
    producers.append(out)
    REPLAY_QUEUE.set((topic,), lambda: len(out))


def _refresh_replays() -> None:
    for topic, producers in list(_replays.items()):
        REPLAY_DELIVERED.values[(topic,)] = sum(p.delivered for p in producers)
