"""The night as the scheduler runs it: `alertdist prefect start|deploy`, `alertdist worker start`, then each
nightly deployment's run is created as its schedule creates it, the process worker starts every one as a
process of its own, and the night those runs make together reconciles."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from alertdist.archive.verify import read_manifest
from alertdist.infra import kafka_local
from alertdist.nights.report import reconcile
from alertdist.nights.state import read_night_state
from alertdist.publish.sources import simulated_alerts
from alertdist.settings import Settings
from alertdist.simulate.night import write_drop_folder

ALERTS = 300
ALERTDIST = str(Path(sys.executable).with_name("alertdist"))
FILTERS = {"bright-transients": "bright_transients", "solar-system": "solar_system", "variable-stars": "variable_stars"}


def _cli(env: dict, *args: str, timeout: float = 600) -> str:
    done = subprocess.run([ALERTDIST, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"alertdist {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


class _Scheduler:
    """Creates deployment runs on the project's own server, as a schedule does, and waits for them."""

    def __init__(self, api_url: str, auth_string: str):
        self.api_url, self.auth_string = api_url, auth_string  # the server's basic auth login (`prefect start`)

    def _run(self, coro_fn):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        async def go():
            async with get_client() as client:
                return await coro_fn(client)

        with temporary_settings({PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: self.auth_string}):
            return asyncio.run(go())

    def trigger(self, deployment: str, parameters: dict | None = None):
        async def go(client):
            found = await client.read_deployments()
            chosen = next(d for d in found if d.name == deployment)
            return (await client.create_flow_run_from_deployment(chosen.id, parameters=parameters or {})).id

        return self._run(go)

    def wait(self, run_ids: list, timeout: float = 420.0) -> dict:
        """The runs once all have ended, or as soon as one has failed."""

        async def go(client):
            deadline = time.monotonic() + timeout
            while True:
                runs = [await client.read_flow_run(i) for i in run_ids]
                failed = any(r.state and r.state.is_final() and not r.state.is_completed() for r in runs)
                if failed or all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                    return {r.id: r for r in runs}
                await asyncio.sleep(2)

        return self._run(go)

    def wait_running(self, run_id, timeout: float = 300.0) -> None:
        async def go(client):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                state = (await client.read_flow_run(run_id)).state
                assert not state.is_final(), f"the run ended before the night began: {state.type} {state.message}"
                if state.is_running():
                    return
                await asyncio.sleep(1)
            raise AssertionError(f"the worker did not start run {run_id} within {timeout:.0f} s")

        self._run(go)

    def log_tail(self, run_id, lines: int = 40) -> str:
        """The run's last log lines (its tasks' included: each filter copy logs its progress), for a failure."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        async def go(client):
            found = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                sort=LogSort.TIMESTAMP_DESC,
                limit=lines,
            )
            return "\n".join(f"{log.timestamp:%H:%M:%S} {log.name}: {log.message}" for log in reversed(found))

        return self._run(go)

    def artifact_rows(self, key: str) -> list[dict]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async def go(client):
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

        found = self._run(go)
        assert found, f"no artifact {key}"
        data = found[0].data
        return json.loads(data) if isinstance(data, str) else data


def test_a_worker_runs_the_nightly_deployments_into_a_night_that_reconciles(kafka_bootstrap, unique, tmp_path):
    survey = f"w{unique}"
    port = kafka_local.free_port()
    env = {
        **os.environ,
        "ALERTDIST_HOME": str(tmp_path / "home"),
        "ALERTDIST_PREFECT_PORT": str(port),
        "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALERTDIST_SURVEY": survey,
        "ALERTDIST_ARCHIVE_URL": str(tmp_path / "archive"),
    }
    env.pop("PREFECT_API_URL", None)  # the CLI talks to the server it starts, not a test harness's
    settings = Settings.load(survey=survey)
    night = settings.tonight()  # what each scheduled run resolves `night: null` to
    drop = tmp_path / "drop"
    drop.mkdir()  # the alert pipeline's drop folder exists before dusk
    _cli(env, "prefect", "start", timeout=180)
    try:
        _cli(env, "prefect", "deploy")
        assert "worker up" in _cli(env, "worker", "start") + _cli(env, "worker", "status")
        auth = (tmp_path / "home" / "prefect" / "auth").read_text().strip()
        scheduler = _Scheduler(f"http://127.0.0.1:{port}/api", auth)

        dusk = scheduler.trigger("topics-at-dusk")
        assert scheduler.wait([dusk])[dusk].state.is_completed()

        # 17:10: the publisher watches the drop folder; the filters wait for the night's alerts
        night_runs = {"publisher": scheduler.trigger("publisher", {"source": str(drop)})}
        night_runs.update({name: scheduler.trigger(name) for name in FILTERS})
        scheduler.wait_running(night_runs["publisher"])
        # the alert pipeline fills the folder as the night goes (about 10 s for the whole night), then ends it
        write_drop_folder(simulated_alerts(ALERTS, night=night, seed=5), drop, speed=3600)
        (drop / "NIGHT_DONE").touch()
        finished = scheduler.wait(list(night_runs.values()))
        for name, run_id in night_runs.items():
            run = finished[run_id]
            assert run.state.is_completed(), (
                f"{name}: {run.state.type} {run.state.message}; its log ends:\n{scheduler.log_tail(run_id)}"
            )
            assert run.work_pool_name == "alertdist" and run.infrastructure_pid, name
        pids = {finished[i].infrastructure_pid for i in night_runs.values()}
        assert len(pids) == len(night_runs), "each run is a process of its own"

        # 07:30: archive the night that just ended (the schedule's `night: null` names it at dawn)
        dawn = scheduler.trigger("archive-at-dawn", {"night": f"{night:%Y%m%d}"})
        assert scheduler.wait([dawn])[dawn].state.is_completed()

        closed = read_night_state(kafka_bootstrap, settings.naming, night)
        assert closed is not None and closed.closed
        published = {**closed.counts, "closed": True}
        assert published["read"] == ALERTS
        filters = {}
        for name in FILTERS.values():
            rows = scheduler.artifact_rows(f"filter-{survey}-{night:%Y%m%d}-{name.replace('_', '-')}")
            filters[name] = [row for row in rows if row["copy"] != "all"]
            assert len(filters[name]) == 2  # the deployments' parallelism
        manifest = read_manifest(str(tmp_path / "archive"), survey, f"{night:%Y%m%d}")
        archived = {p: a.counts for p, a in manifest.programmes.items()}
        assert sum(c["written"] for c in archived.values()) == ALERTS
        assert reconcile(published, filters, archived) == []
    finally:
        for service in ("worker", "prefect"):  # even when the night failed: nothing it started stays up
            subprocess.run([ALERTDIST, service, "stop"], env=env, timeout=120)
