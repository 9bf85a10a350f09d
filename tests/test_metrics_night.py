"""After a whole night (the `night` flow, its stages in their own processes), Prometheus's HTTP API returns each
series of the operations guide with data from that night: the stages announced themselves and were scraped."""

from __future__ import annotations

import os
import signal
import subprocess

from alertdist.infra import prometheus_local
from alertdist.nights.topics import TopicNaming
from alertdist.settings import Settings
from tests.metrics_support import lag_monitor, prometheus  # noqa: F401 - the fixture


def _value(server, query: str) -> float | None:
    found = prometheus_local.query(server.url, query)
    return float(found[0]["value"][1]) if found else None


def test_after_a_night_prometheus_has_every_stages_series(
    kafka_bootstrap,
    prefect_server,
    prometheus,  # noqa: F811
    unique,
    tmp_path,
    monkeypatch,
):
    from alertdist.flows.night import night

    survey = f"q{unique}"
    tonight = f"{Settings.load().tonight():%Y%m%d}"  # recent: the monitor exports the last few nights only
    home = prometheus.home.parent  # the stages announce themselves under $ALERTDIST_HOME/prometheus/targets
    monkeypatch.setenv("ALERTDIST_HOME", str(home))
    monkeypatch.setenv("ALERTDIST_PROMETHEUS_PORT", str(prometheus.port))
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap, "ALERTDIST_SURVEY": survey}
    monitor = lag_monitor(env, f".*{survey}.*", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = night(
            night=tonight,
            source="simulate:300:7",
            survey=survey,
            dest=str(tmp_path / "archive"),
            partitions=3,
            bootstrap_servers=kafka_bootstrap,
            filters=["bright_transients"],
            return_state=True,
        )
        assert state.is_completed(), state.message
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)

    over = "[30m]"
    n = f'night="{tonight}"'
    assert _value(prometheus, f"max_over_time(alertdist_publisher_packets_read_total{{{n}}}{over})") == 300
    delivered = f"sum(max_over_time(alertdist_publisher_packets_delivered_total{{{n}}}{over}))"
    assert _value(prometheus, delivered) == 300
    assert _value(prometheus, f"max_over_time(alertdist_publisher_produce_latency_seconds_count{{{n}}}{over})") == 300
    judged = f'sum(max_over_time(alertdist_filter_alerts_total{{{n},filter="bright_transients"}}{over}))'
    assert _value(prometheus, judged) == 300
    assert _value(prometheus, f"max_over_time(alertdist_filter_transactions_total{{{n}}}{over})") >= 1
    e2e = f'max_over_time(alertdist_end_to_end_latency_seconds_count{{filter="bright_transients"}}{over})'
    assert _value(prometheus, e2e) >= 300
    assert _value(prometheus, f'max_over_time(alertdist_archive_runs_total{{{n},outcome="failed"}}{over})') == 0
    group = TopicNaming(survey=survey).filter_group(Settings.load().tonight(), "bright_transients")
    assert _value(prometheus, f'max_over_time(alertdist_consumer_lag_messages{{group="{group}"}}{over})') is not None
    assert _value(prometheus, f'min_over_time(alertdist_consumer_lag_messages{{group="{group}"}}{over})') == 0
    # the night's state from the nights topic (open while publishing: a 300-alert night may be open under a second)
    assert _value(prometheus, f"min_over_time(alertdist_night_open{{{n}}}{over})") == 0  # closed at the end
    assert _value(prometheus, f"max_over_time(alertdist_night_dawn_timestamp_seconds{{{n}}}{over})") > 0
    assert _value(prometheus, f'max_over_time(alertdist_heartbeat_age_seconds{{cluster="producing"}}{over})') < 30
    jobs = {r["metric"]["job"] for r in prometheus_local.query(prometheus.url, f"max_over_time(up{over})")}
    assert {"publisher", "filter", "monitor"} <= jobs  # the archiver may reuse the publisher's pool process
