"""When a task is retried: only on trouble a retry can fix (`alertdist.kafka.errors.is_transient`), never on a
bug, a refusal or a verification failure; and how run names are built from parameters."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from alertdist.kafka.errors import retry_condition
from alertdist.nights.dates import parse_night

__all__ = ["night_label", "transient_retries"]


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
