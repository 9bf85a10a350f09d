"""prefect.yaml: it parses, every entrypoint imports, and `prefect deploy --all` creates every deployment."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _deployments() -> list[dict]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def test_every_entrypoint_imports_a_flow():
    from prefect import Flow

    for deployment in _deployments():
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), deployment["name"]


def test_prefect_deploy_all_creates_each_deployment_with_its_schedule(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run(
        [prefect, "work-pool", "create", "alertdist", "--type", "process", "--overwrite"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    async def read():
        async with get_client() as client:
            return {d.name: d for d in await client.read_deployments()}

    created = asyncio.run(read())
    for wanted in _deployments():
        deployment = created[wanted["name"]]
        assert deployment.work_pool_name == "alertdist"
        crons = [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]
        expected = [(s["cron"], s["timezone"]) for s in wanted.get("schedules", [])]
        assert crons == expected, wanted["name"]
    assert created["archive-at-dawn"].schedules[0].schedule.timezone == "America/Los_Angeles"
