"""When a task is retried: only on trouble a retry can fix (`alertdist.kafka.errors.is_transient`), never on a
bug, a refusal or a verification failure; and how run names are built from parameters."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from alertdist.kafka.errors import is_transient
from alertdist.nights.dates import parse_night

__all__ = ["night_label", "retry_condition", "transient_retries"]


def retry_condition(*also_transient: type[BaseException]):
    """A Prefect ``retry_condition_fn``: retry transient errors, and those of the types named."""

    def retry_if_transient(task, task_run, state) -> bool:
        try:
            state.result()  # a failed state re-raises the task's own exception
        except also_transient:
            return True
        except Exception as e:
            return is_transient(e)
        return False

    return retry_if_transient


def transient_retries(delays_s: list[int], *also_transient: type[BaseException]) -> dict:
    """Task options: retry after each of ``delays_s`` on transient trouble; never cache (every run does I/O)."""
    return dict(
        retries=len(delays_s),
        retry_delay_seconds=delays_s,
        retry_condition_fn=retry_condition(*also_transient),
        cache_policy=NO_CACHE,
    )


def night_label(night) -> str:
    """``YYYYMMDD`` for a run name, whether the parameter holds a date or its text; ``tonight`` when unset."""
    return f"{parse_night(night):%Y%m%d}" if night else "tonight"
