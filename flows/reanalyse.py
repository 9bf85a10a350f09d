"""Reanalyse: one filter over many archived nights, one task per night's Parquet file, on the flow's task runner.

`offline_filter` runs it with Prefect's Dask task runner (a local cluster, or the one at ``dask_address``). Each
file's passes land in ``out`` as their task finishes; a file that fails after its retries is reported in the
summary and the run fails at the end, the other nights' passes kept.

Like every flow it takes plain parameters, never a `Settings` (a parameter is recorded by Prefect, and settings
may hold Kafka passwords): it loads the settings itself, without any login, for workers that never talk to Kafka.
"""

from __future__ import annotations

from prefect import flow

from alertdist.jobs.filters import Unit
from alertdist.settings import Settings
from alertdist.tasks.filters import filter_unit, summarise_reanalysis, wait_for_units
from alertdist.tasks.progress import ArtifactProgress, artifact_key


class ReanalysisFailedError(RuntimeError):
    """Some nights could not be filtered; the others' passes and all counts are in the output folder."""


@flow(name="reanalyse", flow_run_name="reanalyse-{filter_name}")
def reanalyse(filter_name: str, units: list[Unit], out: str, columnar: bool, missing: dict[str, str]) -> dict:
    progress = ArtifactProgress(artifact_key("reanalysis", filter_name, "progress"), f"Filter {filter_name}")
    shipped = Settings.load().without_logins()  # the Dask workers read archives: they get no Kafka password
    futures = [filter_unit.submit(shipped, filter_name, unit, out, columnar) for unit in units]
    rows, failures = wait_for_units(futures, units, progress)
    summary = summarise_reanalysis(filter_name, out, rows, {**missing, **failures})
    if summary["failed"]:
        raise ReanalysisFailedError(
            f"{len(summary['failed'])} night file(s) failed "
            f"({'; '.join(f'{k}: {v}' for k, v in summary['failed'].items())}); "
            f"the passes of the {len(rows)} other night file(s) are in {out}"
        )
    return summary
