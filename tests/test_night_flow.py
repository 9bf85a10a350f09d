"""The `night` flow end to end on a live broker and a real Prefect server: stages, artifacts, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re

from alertdist.nights.report import MEASURE, reconcile


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            if not found:
                return None
            artifact = found[0]
            if artifact.type == "table" and isinstance(artifact.data, str):
                artifact.data = json.loads(artifact.data)  # table artifacts are stored as JSON text
            return artifact

    return asyncio.run(read())


def _subflow_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )

    return asyncio.run(read())


def _subflow_names(flow_run_id) -> set[str]:
    return {(r.name, r.state.type.value) for r in _subflow_runs(flow_run_id)}


def test_a_whole_night_runs_every_stage_balances_and_leaves_artifacts(
    kafka_bootstrap, prefect_server, unique, tmp_path
):
    from alertdist.flows.night import night

    survey = f"n{unique}"
    state = night(
        night="20231012",
        source="simulate:300:7",
        survey=survey,
        dest=str(tmp_path / "archive"),
        partitions=3,
        bootstrap_servers=kafka_bootstrap,
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result["published"] == 300 and result["archived"] == 300 and result["duplicates"] == 0
    assert set(result["filters"]) == {"bright_transients", "solar_system", "variable_stars"}

    stages = _subflow_names(state.state_details.flow_run_id)
    for prefix in ("topics-20231012", "publish-20231012", "archive-20231012"):
        assert any(name.startswith(prefix) and s == "COMPLETED" for name, s in stages), (prefix, stages)
    opening = {
        r.name.split("-")[0]: r.parameters.get("partitions") for r in _subflow_runs(state.state_details.flow_run_id)
    }
    assert opening["topics"] == 3 and opening["publish"] is None  # opened once, at dusk; publishing only checks

    key = f"{survey}-20231012"
    summary = _artifact(f"night-summary-{key}")
    assert summary is not None and summary.type == "table"
    columns = [
        c for c in summary.data[0] if c != MEASURE
    ]  # one row per measure, one column per programme (fits the page)
    rows = {c: {row[MEASURE]: row[c] for row in summary.data} for c in columns}
    assert sum(row["published"] for name, row in rows.items() if name[0].isdigit()) == 300
    assert sum(row["archived"] for name, row in rows.items() if name[0].isdigit()) == 300
    for name, passed in result["filters"].items():  # per-programme passes add up to the filter's total
        per_programme = [
            int(row[f"{name} passed / errors"].split(" / ")[0]) for p, row in rows.items() if p[0].isdigit()
        ]
        assert sum(per_programme) == passed, name
    lag = _artifact(f"night-filters-{key}")
    assert {row["filter"]: row["final lag"] for row in lag.data} == dict.fromkeys(result["filters"], 0)
    assert {row["filter"]: row["passed"] for row in lag.data} == result["filters"]
    files = _artifact(f"night-archive-{key}")
    assert len(files.data) == 6 and all(len(row["sha256"]) == 13 and row["size"].endswith("B") for row in files.data)
    checksums = _artifact(f"night-checksums-{key}").data  # the full ones, as sha256sum -c reads them
    for row in files.data:
        assert re.search(rf"^{row['sha256'][:-1]}[0-9a-f]{{52}}  {re.escape(row['file'])}$", checksums, re.M)
    for name in ("summary", "archive", "exposures", "checksums"):  # the night's, not a task's
        artifact = _artifact(f"night-{name}-{key}")
        assert (artifact.flow_run_id, artifact.task_run_id) == (state.state_details.flow_run_id, None), name
    plot = _artifact(f"night-exposures-{key}")
    assert plot.type == "markdown" and "data:image/png;base64," in plot.data and "300 alerts" in plot.data
    throughput = _artifact(f"night-throughput-{key}")
    assert any("p99" in row["measure"] for row in throughput.data)
    assert throughput.data[0] == {"measure": "pace", "value": "as fast as the source gives them"}
    stages = result["stages"]  # each long-running stage ran in a process of its own, as in production
    running_together = [stages["publish"]["pid"]] + [stages[f"filter {name}"]["pid"] for name in result["filters"]]
    assert len(set(running_together)) == 4 and os.getpid() not in running_together
    assert all(s["cpu_s"] > 0 and s["peak_rss_mb"] > 50 for s in stages.values()), stages
    shown = _artifact(f"night-stages-{key}")
    assert {row["stage"]: row["pid"] for row in shown.data} == {name: s["pid"] for name, s in stages.items()}
    assert _events(f"alertdist.night.{survey}.20231012") >= {
        "alertdist.night.opened",
        "alertdist.night.closed",
        "alertdist.night.archived",
    }


def _events(resource_id: str, wait_s: float = 30.0) -> set[str]:
    """Names of the events emitted for a resource, read back from the server (they arrive asynchronously)."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    deadline = time.monotonic() + wait_s
    while True:
        body = {
            "filter": {
                "event": {"prefix": ["alertdist.night"]},
                "resource": {"id": [resource_id]},
                "any_resource": None,
            },
            "limit": 50,
        }
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10).json()
        names = {e["event"] for e in found["events"]}
        if len(names) >= 3 or time.monotonic() > deadline:
            return names
        time.sleep(1)


def test_a_broken_stage_fails_the_night_with_a_clear_message(kafka_bootstrap, prefect_server, unique, tmp_path):
    from alertdist.flows.night import night

    state = night(
        night="20231013",
        source="simulate:50:3",
        survey=f"b{unique}",
        dest=str(tmp_path / "archive"),
        partitions=2,
        filters=["bright_transients", "no_such_filter"],
        bootstrap_servers=kafka_bootstrap,
        return_state=True,
    )
    assert state.is_failed()
    assert "no_such_filter" in state.message or "no_such_filter" in str(state.result(raise_on_failure=False))


def test_a_failed_publisher_closes_the_night_so_the_filters_drain_and_stop(
    kafka_bootstrap, prefect_server, unique, tmp_path
):
    from alertdist.flows.night import night
    from alertdist.nights.state import read_night_state
    from alertdist.nights.topics import TopicNaming

    survey = f"p{unique}"
    state = night(
        night="20231014",
        source=str(tmp_path / "no-such-drop-folder"),
        survey=survey,
        dest=str(tmp_path / "archive"),
        partitions=2,
        filters=["solar_system"],
        bootstrap_servers=kafka_bootstrap,
        return_state=True,
    )
    assert state.is_failed() and "no-such-drop-folder" in state.message, state.message
    closed = read_night_state(kafka_bootstrap, TopicNaming(survey=survey), dt.date(2023, 10, 14))
    assert closed.state == "aborted" and closed.ended and "publishing failed" in closed.counts["aborted"]
    assert not (tmp_path / "archive").exists()  # nothing archived from a night that failed


def test_reconciliation_names_what_is_missing():
    published = {"read": 10, "delivered": {"1": 6, "2": 3}, "rejected": {"malformed": 1}, "closed": True}
    filters = {"f": [{"copy": 0, "read": 9, "passed": 2, "rejected": 7, "errors": 0, "malformed": 0, "lag": 0}]}
    archived = {
        1: {"read": 6, "written": 6, "duplicates": 0, "rejected": 0},
        2: {"read": 3, "written": 2, "duplicates": 0, "rejected": 0},
    }
    assert reconcile(published, filters, {1: archived[1], 2: {**archived[2], "written": 3}}) == []
    problems = reconcile(published, filters, archived)
    assert problems == ["programme 2: archiver read 3 but wrote 2 + dropped 0 duplicates + 0 rejected"]
    lagging = {"f": [{**filters["f"][0], "lag": 4}]}
    assert "filter f did not consume the whole night (lag 4)" in reconcile(
        published, lagging, {**archived, 2: {**archived[2], "written": 3}}
    )
    assert any("no archive" in p for p in reconcile(published, filters, {1: archived[1]}))
