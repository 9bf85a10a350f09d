"""Run a filter over an archived night, on demand, and write the passing alerts with their annotations.

The filter is any plug-in (a bundled name or ``package.module:function``); the decision and the annotations
come from the same `AlertFilter.judge` as the live runner, so the table equals what the live filter would have
produced on that night. ``out`` is a local ``.parquet`` or ``.csv`` file, written atomically.
"""

from __future__ import annotations

from prefect import flow

from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.filters import filter_archived
from alertdist.tasks.policy import run_label


@flow(name="offline-filter", flow_run_name=run_label("offline", "filter_name", "archived_night", "sources"))
def offline_filter(
    filter_name: str,
    sources: list[str],
    out: str,
    archived_night: Night | None = None,
    from_parquet: bool = False,
) -> dict:
    """Filter the archived ``sources`` with ``filter_name``; the passing alerts go to ``out``."""
    return filter_archived(Settings.load(), filter_name, sources, out, archived_night, from_parquet)
