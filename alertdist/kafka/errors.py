"""One error base for everything that talks to Kafka, and the one rule for what a retry may fix.

A healthy cluster answers a request or refuses it; only silence (a timeout, no broker, a leader being elected,
too few replicas for a moment) is worth asking again. Every retry in the system, a loop here or a Prefect task's
retry condition, asks `is_transient`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "TRANSIENT_CODES",
    "KafkaOperationError",
    "is_transient",
    "is_unreachable",
    "retry_call",
    "retry_condition",
    "retry_until",
]

_log = logging.getLogger("alertdist.kafka")
T = TypeVar("T")

#: Error codes that mean "not now" rather than "no", besides those librdkafka itself marks retriable.
TRANSIENT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # a topic created a moment ago is not known to every broker yet
    }
)


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
            err = exc.args[0]  # a fatal error ends the client, and an abortable one wants an abort, not a repeat
            if err.fatal() or err.txn_requires_abort():
                return False
            return bool(err.retriable() or err.code() in TRANSIENT_CODES)
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


#: What librdkafka says when no broker answers at all (the codes, and their text where an error was re-worded).
_UNREACHABLE_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})
_UNREACHABLE_TEXT = ("Broker transport failure", "All broker connections are down", "_TRANSPORT", "_ALL_BROKERS_DOWN")


def is_unreachable(exc: BaseException | None) -> bool:
    """Whether the failure is that no broker answered (down, wrong address), anywhere in the cause chain."""
    for _ in range(10):
        if exc is None:
            return False
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if isinstance(error, KafkaError) and error.code() in _UNREACHABLE_CODES:
            return True
        if any(text in str(exc) for text in _UNREACHABLE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retrying(what: str, call: Callable[..., T], args, kwargs, pauses: Iterable[float], level: int) -> T:
    """The one retry loop: ``call`` again after each pause while it fails transiently and pauses remain."""
    pauses = iter(pauses)
    for attempt in itertools.count(1):
        try:
            return call(*args, **kwargs)
        except Exception as e:
            pause = next(pauses, None) if is_transient(e) else None
            if pause is None:
                raise
            _log.log(level, "%s: %s; asking again (%d)", what, e, attempt)
            time.sleep(pause)


def retry_call(what: str, call: Callable[..., T], *args, attempts: int = 6, delay_s: float = 0.5, **kwargs) -> T:
    """``call(*args, **kwargs)``, asked again (after ``delay_s`` x the attempt) while it fails transiently."""
    return _retrying(what, call, args, kwargs, (delay_s * n for n in range(1, attempts)), logging.INFO)


def retry_until(what: str, call: Callable[..., T], *args, timeout_s: float, delay_s: float = 0.2, **kwargs) -> T:
    """``call(*args, **kwargs)``, asked again every ``delay_s`` while it fails transiently, for up to ``timeout_s``.

    For waiting on something the cluster does a moment later (a new topic's leaders, new ACLs served): the call
    raises a transient error while it is not there yet, and that error is what the caller sees at the deadline.
    """
    deadline = time.monotonic() + timeout_s

    def pauses():
        while (left := deadline - time.monotonic()) > 0:
            yield min(delay_s, left)

    return _retrying(what, call, args, kwargs, pauses(), logging.DEBUG)  # waiting is expected: no news


def retry_condition(*also: type[BaseException]) -> Callable[..., bool]:
    """A Prefect ``retry_condition_fn``: retry a task that failed transiently, or with one of the types ``also``."""

    def transient_failure(task, task_run, state) -> bool:
        try:
            state.result()  # a failed state re-raises the task's own exception
        except also:
            return True
        except Exception as e:
            return is_transient(e)
        return False

    return transient_failure
