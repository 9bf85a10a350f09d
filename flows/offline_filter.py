"""Run a filter over archived nights, on demand, and write the passing alerts with their annotations.

Two shapes. With ``nights`` (nights, ``FIRST..LAST`` ranges): a reanalysis of the archive (default: the settings'
one), one unit of work per night's Parquet file on Dask (`flows.reanalyse`), per-alert or ``columnar``; ``out`` is
a folder that receives one Parquet dataset of passes and ``_counts.json``. With ``sources``: one process over any
archived packets; ``out`` is a ``.parquet`` or ``.csv`` file. Either way the decision and the annotations are the
live filter's, so the results equal what the live filter produced on those nights.
"""

from __future__ import annotations

from prefect import flow

from alertdist.flows.reanalyse import reanalyse
from alertdist.nights.dates import Night, parse_nights
from alertdist.settings import Settings
from alertdist.tasks.dask import dask_runner
from alertdist.tasks.filters import filter_archived, reanalysis_units
from alertdist.tasks.policy import run_label


@flow(name="offline-filter", flow_run_name=run_label("offline", "filter_name", "archived_night", "sources", "nights"))
def offline_filter(
    filter_name: str,
    out: str,
    sources: list[str] | None = None,
    archived_night: Night | None = None,
    from_parquet: bool = False,
    nights: list[str] | None = None,
    archive: str | None = None,
    programmes: list[int] | None = None,
    columnar: bool = False,
    workers: int | None = None,
) -> dict:
    """Filter ``nights`` of ``archive`` on Dask, or the archived ``sources`` in this process; passes go to ``out``."""
    settings = Settings.load()
    if nights:
        units, missing = reanalysis_units(settings, parse_nights(nights), archive, programmes)
        runner = dask_runner(settings, workers)
        return reanalyse.with_options(task_runner=runner)(filter_name, units, out, columnar, missing)
    if not sources:
        raise ValueError("give nights (a reanalysis of the archive) or sources (archived files) to filter")
    return filter_archived(settings, filter_name, sources, out, archived_night, from_parquet)
