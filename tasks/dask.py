"""Where a reanalysis runs: Prefect's Dask task runner on an existing cluster (settings) or a local one."""

from __future__ import annotations

from prefect_dask import DaskTaskRunner

from alertdist.settings import Settings

__all__ = ["dask_runner"]


def dask_runner(settings: Settings, workers: int | None = None) -> DaskTaskRunner:
    """The cluster at ``settings.dask_address``, or a local one of ``workers`` (else ``settings.dask_workers``, else
    one per core) single-threaded processes: a filter holds the GIL, so threads would not add up."""
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
