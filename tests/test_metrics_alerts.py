"""A real filter copy (`alertdist filter run`) SIGKILLed mid-night, a real Prometheus and a real Prefect server:
the filter-lag alert fires within its rule's ``for:``, reaches Prefect as an ``alertdist.alert.firing`` event,
and resolves (``alertdist.alert.resolved``) once a restarted copy has caught up."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaException

from alertdist.filters.live import group_id_for
from alertdist.kafka.clients import admin_client, producer
from alertdist.nights.dates import format_night
from alertdist.nights.state import NightState, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.sources import simulated_alerts
from alertdist.settings import Settings
from tests.conftest import REPO
from tests.kafka_support import committed_offsets
from tests.metrics_support import prometheus  # noqa: F401 - the fixture
from tests.test_metrics_live import _events
from tests.test_metrics_prometheus import _wait_for

NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 2
FOR_S = 60  # AlertdistFilterLagging's for: in infra/prometheus/rules/alertdist.yml
ALERTDIST = str(Path(sys.executable).parent / "alertdist")


def _produce_stale(bootstrap: str, topic: str, packets: list[bytes], age_s: float = 900) -> None:
    """Alerts stamped ``age_s`` ago (15 minutes), as the publisher writes them: a reader's lag in seconds is their
    age."""
    out = producer(bootstrap)
    stale_ms = int((time.time() - age_s) * 1000)
    for i, packet in enumerate(packets):
        stamp = str(stale_ms + i).encode()
        out.produce(
            topic,
            packet,
            timestamp=stale_ms + i,
            headers=[("alertdist.produced_ms", stamp), ("alertdist.published_ms", stamp)],
        )
    assert out.flush(30) == 0


def alert_events(label: str, value: str, at_least: int = 2, timeout: float = 60.0) -> list[dict]:
    """Prefect's events of the Prometheus alerts labelled ``label`` = ``value``, oldest first, once ``at_least``
    have arrived (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in _events("alertdist.alert.") if e["resource"].get(f"alertdist.{label}") == value]
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        time.sleep(1)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_a_killed_filter_copy_fires_its_lag_alert_as_a_prefect_event_and_a_restarted_copy_resolves_it(
    kafka_bootstrap,
    prefect_server,
    prometheus,  # noqa: F811
    unique,
    tmp_path,
):
    from prefect import flow

    from alertdist.tasks.live_ops import start_live_panel

    naming = TopicNaming(survey=f"k{unique}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    mark_night(kafka_bootstrap, naming, NightState(format_night(NIGHT), "open"))  # mid-night: never closed here
    topic = naming.programme_topic(NIGHT, 1)
    packets = [a.packet for a in simulated_alerts(80, night=NIGHT, seed=7)]
    group = group_id_for(naming, NIGHT, "bright_transients")
    env = {
        **os.environ,
        "ALERTDIST_HOME": str(tmp_path / "home"),  # its prometheus/targets is the fixture's folder
        "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALERTDIST_SURVEY": naming.survey,
        "PYTHONPATH": str(REPO),
    }
    copy = [ALERTDIST, "filter", "run", "bright_transients", "--night", format_night(NIGHT), "--batch-size", "10"]

    def start(command: list[str]) -> subprocess.Popen:
        log = (tmp_path / f"{command[1]}-{time.monotonic_ns()}.log").open("w")
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def committed() -> int:
        try:
            return committed_offsets(kafka_bootstrap, group, [topic], PARTITIONS)
        except KafkaException:  # a fresh broker's group coordinator is still loading
            return -1

    _produce_stale(kafka_bootstrap, topic, packets[:40])
    first = start(copy)
    monitor = start([ALERTDIST, "lag", "serve", "--interval", "1", "--groups", f".*{naming.survey}_.*"])
    restarted = None
    try:
        _wait_for("the first copy to commit the first 40 alerts", lambda: committed() == 40, timeout=120)
        first.send_signal(signal.SIGKILL)  # mid-night: the night stays open, more alerts come
        first.wait(30)
        _produce_stale(kafka_bootstrap, topic, packets[40:])
        lagging = f'alertdist_consumer_lag_seconds{{group="{group}"}} > 120'
        _wait_for("Prometheus to see the group 15 minutes behind", lambda: _series(prometheus, lagging), timeout=60)
        seen_lagging = time.monotonic()
        settings = Settings.load(
            bootstrap_servers=kafka_bootstrap, survey=naming.survey, prometheus_port=prometheus.port
        )

        @flow(name="filter-lag-alert-test")
        def night_watch() -> dict:
            nonlocal restarted
            panel = start_live_panel(settings, NIGHT, every_s=0.5)
            seen = {}
            try:
                for state, timeout in (("firing", FOR_S + 60), ("resolved", 150)):
                    deadline = time.monotonic() + timeout
                    while ((state, "AlertdistFilterLagging") not in panel.emitted) and time.monotonic() < deadline:
                        time.sleep(0.25)
                    seen[state] = time.monotonic()
                    if state == "firing":
                        restarted = start(copy)  # a copy is back: it resumes from the committed offsets
            finally:
                panel.stop()
            return {"emitted": [list(e) for e in panel.emitted], **seen}

        watched = night_watch()
        lag_alerts = [e for e in watched["emitted"] if e[1] == "AlertdistFilterLagging"]
        assert lag_alerts[:2] == [["firing", "AlertdistFilterLagging"], ["resolved", "AlertdistFilterLagging"]]
        assert FOR_S - 5 <= watched["firing"] - seen_lagging <= FOR_S + 30  # within for:, not before it
        assert committed() == 80  # the restarted copy caught up on every alert
    finally:
        for process in (first, monitor, restarted):
            if process is not None:
                _stop(process)

    events = alert_events("group", group)
    assert [e["event"] for e in events[:2]] == ["alertdist.alert.firing", "alertdist.alert.resolved"]
    assert events[0]["resource"]["prefect.resource.name"] == "AlertdistFilterLagging"
    assert events[0]["payload"]["labels"]["severity"] == "warning"


def _series(server, query: str) -> list:
    from alertdist.infra import prometheus_local

    return prometheus_local.query(server.url, query)
