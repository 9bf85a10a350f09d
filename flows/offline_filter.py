"""Run a filter over an archived night, on demand, and write the passing alerts with their annotations.

The filter is any plug-in (a bundled name or ``package.module:function``); the decision and the annotations
come from the same `AlertFilter.judge` as the live runner, so the table equals what the live filter would have
produced on that night. ``out`` is a local ``.parquet`` or ``.csv`` file, written atomically.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.filters import filter_archived


def _run_name() -> str:
    p = flow_run.parameters
    first = str((p.get("sources") or ["?"])[0]).rstrip("/").rsplit("/", 1)[-1]
    return f"offline-{p['filter_name']}-{p.get('archived_night') or first}"


@flow(name="offline-filter", flow_run_name=_run_name)
def offline_filter(
    filter_name: str,
    sources: list[str],
    out: str,
    archived_night: Night | None = None,
    from_parquet: bool = False,
) -> dict:
    """Filter the archived ``sources`` with ``filter_name``; the passing alerts go to ``out``."""
    return filter_archived(Settings.load(), filter_name, sources, out, archived_night, from_parquet)
