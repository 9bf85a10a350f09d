"""Two-tier mode with a real Prometheus and a real Prefect server: MirrorMaker 2's own JMX metrics (replication
latency) reach Prometheus by default; then the mirror is SIGKILLed mid-night, the mirror-lag alert fires within
its rule's ``for:`` as an ``alertdist.alert.firing`` event, and resolves once the mirror is back and caught up."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from alertdist.jobs import mirror
from alertdist.kafka.clients import admin_client
from alertdist.mirror import process
from alertdist.nights.dates import format_night
from alertdist.nights.state import NightState, mark_night
from alertdist.nights.topics import TopicSettings, ensure_night_topics
from alertdist.publish.sources import simulated_alerts
from tests.conftest import REPO
from tests.metrics_support import prometheus  # noqa: F401 - the fixture
from tests.mirror_support import two_tier_settings
from tests.test_metrics_alerts import _produce_stale, _series, _stop, alert_events
from tests.test_metrics_prometheus import _wait_for

NIGHT = dt.date(2023, 10, 14)
FOR_S = 120  # AlertdistMirrorLagging's for: in infra/prometheus/rules/alertdist.yml
ALERTDIST = str(Path(sys.executable).parent / "alertdist")


def test_mirrormakers_jmx_metrics_then_a_killed_mirror_fires_its_lag_alert_and_resolves_when_back(
    two_clusters,
    prefect_server,
    prometheus,  # noqa: F811
    unique,
    tmp_path,
):
    from prefect import flow

    from alertdist.tasks.live_ops import start_live_panel

    settings = two_tier_settings(
        two_clusters, tmp_path / "home", survey=f"m{unique}", prometheus_port=prometheus.port
    )  # its prometheus/ is the fixture's: MirrorMaker's JMX exporter is announced there
    naming, home = settings.naming, mirror.mirror_home(settings)
    assert home.jmx_port == settings.mirror_rest_port + 50  # on by default, like the brokers'
    ensure_night_topics(admin_client(settings.bootstrap_servers), naming, NIGHT, TopicSettings(partitions=2))
    mark_night(settings.bootstrap_servers, naming, NightState(format_night(NIGHT), "open"))  # never closed here
    topic = naming.programme_topic(NIGHT, 1)
    packets = [a.packet for a in simulated_alerts(60, night=NIGHT, seed=9)]
    env = {
        **os.environ,
        "ALERTDIST_HOME": str(settings.home),
        "ALERTDIST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ALERTDIST_PUBLIC_BOOTSTRAP_SERVERS": settings.public_bootstrap_servers,
        "ALERTDIST_SURVEY": naming.survey,
        "PYTHONPATH": str(REPO),
    }
    log = (tmp_path / "monitor.log").open("w")
    monitor = subprocess.Popen(
        [ALERTDIST, "lag", "serve", "--interval", "1", "--two-tier", "--groups", f".*{naming.survey}_.*"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        mirror.start_mirror(settings)
        _produce_stale(settings.bootstrap_servers, topic, packets[:30], age_s=0)  # tonight's, mirrored at once
        latency = _wait_for(
            "MirrorMaker's replication latency in Prometheus",
            lambda: _series(prometheus, f'kafka_connect_mirror_replication_latency_ms_max{{topic="{topic}"}} >= 0'),
            timeout=180,
        )  # >= 0: a partition with no record in the sample window reports NaN
        assert latency[0]["metric"]["job"] == "mirror" and latency[0]["metric"]["partition"] in ("0", "1")
        caught_up = f'alertdist_mirror_lag_messages{{topic="{topic}"}} == 0'
        _wait_for("the monitor's mirror lag at 0", lambda: _series(prometheus, caught_up), timeout=120)

        assert process.stop(home, kill=True)  # mid-night: the night stays open, alerts keep coming upstream
        _produce_stale(settings.bootstrap_servers, topic, packets[30:])  # waiting 15 minutes by their stamps
        lagging = f'alertdist_mirror_lag_seconds{{topic="{topic}"}} > 60'
        _wait_for("Prometheus to see the mirror 15 minutes behind", lambda: _series(prometheus, lagging), timeout=60)
        seen_lagging = time.monotonic()

        @flow(name="mirror-lag-alert-test")
        def night_watch() -> dict:
            panel = start_live_panel(settings, NIGHT, every_s=0.5, public=True)
            seen = {}
            try:
                for state, timeout in (("firing", FOR_S + 60), ("resolved", 240)):
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline and not _emitted(panel, state):
                        time.sleep(0.25)
                    seen[state] = time.monotonic()
                    if state == "firing":
                        mirror.start_mirror(settings)  # the mirror is back: it resumes from its committed offsets
            finally:
                panel.stop()
            return {"emitted": [list(e) for e in panel.emitted], **seen}

        watched = night_watch()
        emitted = watched["emitted"]  # (state, alertname): the heartbeat's late may fire under the same name
        assert emitted.index(["firing", "AlertdistMirrorLagging"]) < emitted.index(
            ["resolved", "AlertdistMirrorLagging"]
        )
        assert FOR_S - 5 <= watched["firing"] - seen_lagging <= FOR_S + 30  # within for:, not before it
    finally:
        process.stop(home)
        monitor.send_signal(signal.SIGTERM)
        _stop(monitor)

    events = alert_events("topic", topic)
    assert [e["event"] for e in events[:2]] == ["alertdist.alert.firing", "alertdist.alert.resolved"]
    assert events[0]["resource"]["prefect.resource.name"] == "AlertdistMirrorLagging"


def _emitted(panel, state: str) -> bool:
    return (state, "AlertdistMirrorLagging") in panel.emitted
