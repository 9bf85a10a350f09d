"""Where a reanalysis runs: Prefect's Dask task runner on an existing cluster (settings) or a local one."""

from __future__ import annotations

from distributed.security import Security
from prefect.settings import PREFECT_API_URL
from prefect_dask import DaskTaskRunner

from alertdist.settings import Settings

__all__ = ["dask_runner"]


def dask_runner(settings: Settings, workers: int | None = None) -> DaskTaskRunner:
    """The cluster at ``settings.dask_address``, or a local one of ``workers`` (else ``settings.dask_workers``, else
    one per core) single-threaded processes: a filter holds the GIL, so threads would not add up.

    The workers report their task runs to the Prefect server: without one (Prefect's ephemeral mode) each worker
    process would start its own and time out, so that is refused here with what to do.

    The local cluster speaks only mutual TLS with a throwaway CA of its own (`Security.temporary`): its scheduler
    listens on a port any local user could reach, and a Dask scheduler runs whatever its clients submit. An
    existing cluster's security is its operator's (``tls://`` address and certificates in Dask's configuration).
    """
    if not PREFECT_API_URL.value():
        raise RuntimeError(
            "a reanalysis on Dask needs a Prefect server its workers can reach: start one (`alertdist prefect start`) "
            "and set PREFECT_API_URL (the command prints it)"
        )
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "security": Security.temporary(),  # also makes the scheduler's and workers' addresses tls://
        }
    )
