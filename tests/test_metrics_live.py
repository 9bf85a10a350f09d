"""The night flow's live panel on a real Prefect server and a real Prometheus: the artifact shows the night's
consumer lag with graph links, and an alert that starts firing in Prometheus becomes a Prefect event."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import httpx

from alertdist.settings import Settings
from tests.conftest import REPO
from tests.metrics_support import lagging_group, prometheus  # noqa: F401 - the fixture
from tests.test_night_flow import _artifact

NIGHT = dt.date(2024, 1, 1)

# a process whose archive run fails twelve seconds in: AlertdistArchiveFailed fires at once (it has no for:)
_FAILING_ARCHIVER = """
import sys, time
from pathlib import Path
from alertdist.metrics.catalog import archive_finished, archive_started
from alertdist.metrics.exposition import expose
archive_started("20240101")
expose("archiver", Path(sys.argv[1]))
time.sleep(12)  # scraped at 0 first: increase() needs the step
archive_finished("20240101", ok=False)
time.sleep(300)
"""


def _events(prefix: str) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"prefix": [prefix]}, "order": "ASC"}, "limit": 50}
    response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


def test_the_live_panel_shows_lag_and_turns_a_firing_alert_into_a_prefect_event(
    kafka_bootstrap,
    prefect_server,
    prometheus,  # noqa: F811
    unique,
):
    from prefect import flow

    from alertdist.tasks.live_ops import start_live_panel

    survey = f"l{unique}"
    _, group = lagging_group(kafka_bootstrap, survey, produced=7, committed=2)
    archiver = subprocess.Popen([sys.executable, "-c", _FAILING_ARCHIVER, str(prometheus.targets_dir)], cwd=REPO)
    settings = Settings.load(bootstrap_servers=kafka_bootstrap, survey=survey, prometheus_port=prometheus.port)

    @flow(name="live-panel-test")
    def watch() -> list:
        panel = start_live_panel(settings, NIGHT, every_s=0.5)
        deadline = time.monotonic() + 90
        while ("firing", "AlertdistArchiveFailed") not in panel.emitted and time.monotonic() < deadline:
            time.sleep(0.5)
        panel.stop()
        return [panel.updates, panel.emitted]

    try:
        updates, emitted = watch()
    finally:
        archiver.kill()
        archiver.wait()
    assert ["firing", "AlertdistArchiveFailed"] in [list(e) for e in emitted]
    assert updates >= 2

    artifact = _artifact(f"night-live-{survey}-20240101")
    assert artifact is not None and artifact.type == "markdown"
    assert f"| {group} | 5 |" in artifact.data  # 7 published, 2 committed
    assert f"http://127.0.0.1:{prometheus.port}/graph?" in artifact.data

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = [e for e in _events("alertdist.alert.") if e["resource"].get("alertdist.night") == "20240101"]
        if events:
            break
        time.sleep(1)
    assert events, "the firing alert never reached Prefect's events"
    assert events[0]["event"] == "alertdist.alert.firing"
    assert events[0]["resource"]["prefect.resource.name"] == "AlertdistArchiveFailed"
    assert events[0]["payload"]["annotations"]["summary"] == "Archiving night 20240101 failed"
