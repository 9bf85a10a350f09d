"""Run one filter on one night: N copies sharing the night's partitions, exactly once, and a summary table.

Each copy is a task run in a thread of this flow run. Copy i always uses copy index i, so a retried copy (or a
rerun of the whole flow) takes over its own transactional id and resumes from the group's committed offsets:
retries can neither skip nor duplicate an output. The copies stop by themselves once the night is closed and
the group has consumed it. Only transient Kafka errors retry; a filter that keeps raising stops with its reason.
"""

from __future__ import annotations

import re

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.flows.topics import tonight
from alertdist.filters.live import run_live
from alertdist.kafka.errors import retry_condition
from alertdist.nights.topics import TopicNaming


@task(retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=retry_condition(), cache_policy=NO_CACHE,
      task_run_name="{filter_name}-{night}-copy{copy_index}")
def run_filter_copy(filter_name: str, night: str, copy_index: int, bootstrap_servers: str, naming: TopicNaming,
                    programmes: list[int] | None) -> dict:
    r = run_live(filter_name, night, bootstrap_servers=bootstrap_servers, naming=naming, programmes=programmes,
                 copy_index=copy_index)
    return {"copy": r.copy_index, "status": r.status, "read": r.read, "passed": r.passed, "rejected": r.rejected,
            "errors": r.errors, "malformed": r.malformed, "lag": r.lag, "partitions": len(r.partitions),
            "seconds": round(r.elapsed_s, 1),
            "by_programme": {str(naming.programid_of(t)): counts for t, counts in sorted(r.by_topic.items())}}


@task(cache_policy=NO_CACHE)
def summarize(filter_name: str, night: str, survey: str, rows: list[dict]) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"filter-{survey}-{night}-{filter_name}".lower())
    total = {"copy": "all", **{k: sum(r[k] for r in rows) for k in ("read", "passed", "rejected", "errors",
                                                                     "malformed", "partitions")},
             "lag": min((r["lag"] for r in rows if r["lag"] is not None), default=None)}
    shown = [{k: v for k, v in row.items() if k != "by_programme"} for row in rows]
    create_table_artifact(shown + [total], key=key, description=f"Filter {filter_name} on night {night}")


def _run_name() -> str:
    p = flow_run.parameters
    return f"filter-{p['filter_name']}-{p.get('night') or 'tonight'}-x{p.get('parallelism', 1)}"


@flow(name="filter-night", flow_run_name=_run_name)
def filter_night(
    filter_name: str,
    night: str | None = None,
    programmes: list[int] | None = None,
    parallelism: int = 1,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> list[dict]:
    """Run `parallelism` copies of ``filter_name`` on ``night`` (YYYYMMDD; default tonight) until it is consumed."""
    settings = Settings.from_env()
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    night_text = night or f"{tonight(settings):%Y%m%d}"
    bootstrap = bootstrap_servers or settings.bootstrap_servers
    futures = [run_filter_copy.submit(filter_name, night_text, i, bootstrap, naming, programmes)
               for i in range(parallelism)]
    outcomes = [f.result(raise_on_failure=False) for f in futures]
    rows = [o for o in outcomes if isinstance(o, dict)]
    summarize(filter_name, night_text, naming.survey, rows)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise failures[0]
    return rows
