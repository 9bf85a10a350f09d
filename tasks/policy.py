"""When a task is retried: only on trouble a retry can fix (`alertdist.kafka.errors.is_transient`), never on a
bug, a refusal or a verification failure; and how run names are built from parameters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import SimpleNamespace

from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run

from alertdist.kafka.errors import retry_condition
from alertdist.nights.dates import format_night, parse_night
from alertdist.settings import Settings

__all__ = ["night_label", "run_label", "task_label", "transient_retries"]


def transient_retries(delays_s: list[int], *also_transient: type[BaseException]) -> dict:
    """Task options: retry after each of ``delays_s`` on transient trouble; never cache (every run does I/O)."""
    return {
        "retries": len(delays_s),
        "retry_delay_seconds": delays_s,
        "retry_condition_fn": retry_condition(*also_transient),
        "cache_policy": NO_CACHE,
    }


def night_label(night) -> str:
    """``YYYYMMDD`` for a run name, whether the parameter holds a date or its text; when unset, the night the
    flow will run on (tonight at the site, `Settings.tonight`): a run is always named by its night."""
    return format_night(parse_night(night) if night else Settings.load().tonight())


def run_label(prefix: str, *keys: str, tonight: bool = True) -> Callable[[], str]:
    """A ``flow_run_name``: ``prefix`` and the run's parameters ``keys``, readable in the UI (a night as YYYYMMDD, an
    unset ``night`` as tonight's date unless told otherwise; a path or URL by its last part, a list by its first item;
    other unset ones left out)."""

    def name() -> str:
        parts = [prefix]
        for key in keys:
            value = flow_run.parameters.get(key)
            if (key == "night" and tonight) or (key.endswith("night") and value):
                parts.append(night_label(value))
            elif value is not None:
                first = value[0] if isinstance(value, list) and value else value
                parts.append(str(first).split(":")[0].rstrip("/").rsplit("/", 1)[-1])
        return "-".join(parts)

    return name


def task_label(template: str) -> Callable[[], str]:
    """A ``task_run_name``: ``template`` formatted with the task's parameters, every date (a night) as YYYYMMDD and
    an object's ``night``/``programid`` reachable as ``{unit.night}``."""

    def label(value):
        if isinstance(value, dt.date):
            return format_night(value)
        if hasattr(value, "night"):
            return SimpleNamespace(**{k: label(v) for k, v in vars(value).items()})
        return value

    def name() -> str:
        return template.format(**{key: label(value) for key, value in task_run.parameters.items()})

    return name
