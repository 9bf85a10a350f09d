"""Run one filter on one night: N copies sharing the night's partitions, exactly once, and a summary table.

The copies stop by themselves once the night is closed and the group has consumed it. Only transient Kafka
errors retry; a filter that keeps raising stops with its reason.
"""

from __future__ import annotations

from prefect import flow

from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.filters import run_filter_copy, summarise_filter
from alertdist.tasks.policy import run_label


@flow(name="filter-night", flow_run_name=run_label("filter", "filter_name", "night", "parallelism"))
def filter_night(
    filter_name: str,
    night: Night | None = None,
    programmes: list[int] | None = None,
    parallelism: int = 1,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
    public_bootstrap_servers: str | None = None,
    columnar: bool = False,
    batch_deadline_s: float = 10.0,
) -> list[dict]:
    """Run `parallelism` copies of ``filter_name`` (its columnar version if asked; ``NAME=package.module:function``
    for a plug-in under the name and login it is started with) on ``night`` (YYYYMMDD; default tonight) until it
    is consumed; its code has ``batch_deadline_s`` to judge each batch."""
    settings = Settings.load(
        bootstrap_servers=bootstrap_servers, survey=survey, public_bootstrap_servers=public_bootstrap_servers
    )
    settings = settings.downstream() if public_bootstrap_servers else settings  # the two-tier mode's readers
    night = night or settings.tonight()
    futures = [
        run_filter_copy.submit(settings, filter_name, night, i, programmes, columnar, batch_deadline_s)
        for i in range(parallelism)
    ]
    outcomes = [f.result(raise_on_failure=False) for f in futures]
    summarise_filter(settings, filter_name, night, [o for o in outcomes if isinstance(o, dict)])
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise failures[0]
    return outcomes
