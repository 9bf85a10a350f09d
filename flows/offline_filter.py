"""Run a filter over an archived night, on demand, and write the passing alerts with their annotations.

The filter is any plug-in (a bundled name or ``package.module:function``); the decision and the annotations
come from the same `AlertFilter.judge` as the live runner, so the table equals what the live filter would
have produced on that night. ``sources``: tarballs, Parquet files or datasets, or an archive root with
``archived_night``, local or remote. ``out`` is a local ``.parquet`` or ``.csv`` file, written atomically.
Reading a remote source retries on network errors only; a filter bug or a bad path fails at once.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.filters.batch import BatchResult, run_batch, write_table
from alertdist.access.readers import packets_for_batch


def network_trouble(task, task_run, state) -> bool:
    """Retry only when a connection broke or timed out somewhere in the exception's cause chain."""
    try:
        state.result()
    except Exception as e:
        while e is not None:
            if isinstance(e, (ConnectionError, TimeoutError)):
                return True
            e = e.__cause__ or e.__context__
    return False


@task(retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=network_trouble, cache_policy=NO_CACHE)
def filter_sources(filter_name: str, sources: list[str], out: str, archived_night: str | None,
                   from_parquet: bool, settings: Settings) -> dict:
    packets, counts = packets_for_batch(sources, archived_night=archived_night,
                                        storage_options=settings.storage_options,
                                        prefer="parquet" if from_parquet else "tarball")
    logger = get_run_logger()

    def report(r: BatchResult) -> None:
        logger.info("read %d, passed %d, errors %d", r.read, r.passed, r.errors + r.malformed)

    result = run_batch(filter_name, packets, progress=report, progress_every=5000)
    path = write_table(result.table, out)
    for source, outcome, reason in result.problems[:20]:
        logger.warning("%s: %s: %s", outcome, source, reason)
    summary = {"filter": result.filter_name, "read": result.read, "passed": result.passed,
               "rejected": result.rejected, "errors": result.errors, "malformed": result.malformed,
               "bad_members": sum(c.bad for c in counts), "out": str(path)}
    create_table_artifact([{"what": k, "value": str(v)} for k, v in summary.items()]
                          + [{"what": f"source {c.source}", "value": f"{c.good} good, {c.bad} bad"} for c in counts],
                          description=f"Filter {result.filter_name} over {', '.join(sources)}")
    return summary


def _run_name() -> str:
    p = flow_run.parameters
    first = str((p.get("sources") or ["?"])[0]).rstrip("/").rsplit("/", 1)[-1]
    return f"offline-{p['filter_name']}-{p.get('archived_night') or first}"


@flow(name="offline-filter", flow_run_name=_run_name)
def offline_filter(
    filter_name: str,
    sources: list[str],
    out: str,
    archived_night: str | None = None,
    from_parquet: bool = False,
) -> dict:
    """Filter the archived ``sources`` with ``filter_name``; the passing alerts go to ``out``."""
    return filter_sources(filter_name, sources, out, archived_night, from_parquet, Settings.from_env())
