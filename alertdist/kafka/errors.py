"""One error base for everything that talks to Kafka, and the one rule for what a retry may fix.

A healthy cluster answers a request or refuses it; only silence (a timeout, no broker, a leader being elected,
too few replicas for a moment) is worth asking again. Every retry in the system, a loop here or a Prefect task's
retry condition, asks `is_transient`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

__all__ = ["KafkaOperationError", "TRANSIENT_CODES", "is_transient", "retry_call"]

_log = logging.getLogger("alertdist.kafka")
T = TypeVar("T")

#: Error codes that mean "not now" rather than "no", besides those librdkafka itself marks retriable.
TRANSIENT_CODES = frozenset({
    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NETWORK_EXCEPTION,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,  # a topic created a moment ago is not known to every broker yet
})


class KafkaOperationError(RuntimeError):
    """What was attempted against Kafka, and why it failed; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def is_transient(exc: BaseException | None) -> bool:
    """Whether retrying might help: a transient error anywhere in the exception's cause chain."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KafkaOperationError) and exc.transient:
            return True
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            err = exc.args[0]
            return bool(err.retriable() or err.code() in TRANSIENT_CODES)
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def retry_call(what: str, call: Callable[..., T], *args, attempts: int = 6, delay_s: float = 0.5, **kwargs) -> T:
    """``call(*args, **kwargs)``, asked again (after ``delay_s`` x the attempt) while it fails transiently."""
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as e:
            if attempt == attempts or not is_transient(e):
                raise
            _log.info("%s: %s; retrying (%d/%d)", what, e, attempt, attempts - 1)
            time.sleep(delay_s * attempt)
    raise AssertionError("unreachable")
