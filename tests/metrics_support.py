"""The project's Prometheus on free ports for the metrics tests (Debian's binary; CI installs it)."""

from __future__ import annotations

import pytest

from alertdist.infra import kafka_local, prometheus_local


@pytest.fixture
def prometheus(tmp_path):
    """A fresh Prometheus scraping and evaluating every second, its home in ``tmp_path/home/prometheus``."""
    try:
        prometheus_local.binary()
    except prometheus_local.PrometheusInfraError as e:
        pytest.fail(f"{e} (CI installs it: .ci/run)")
    server = prometheus_local.PrometheusServer(
        home=tmp_path / "home" / "prometheus",
        port=kafka_local.free_port(),
        scrape_interval_s=1,
        evaluation_interval_s=1,
    )
    prometheus_local.start(server, log=lambda *_: None)
    try:
        yield server
    finally:
        prometheus_local.stop(server, log=lambda *_: None)
