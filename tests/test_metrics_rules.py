"""The alert and recording rules: `promtool test rules` on their unit tests, and the Prometheus configuration the
launcher writes accepted by `promtool check config` (CI runs both through this file)."""

from __future__ import annotations

import subprocess

import pytest

from alertdist.infra import prometheus_local
from tests.conftest import REPO

RULES_TESTS = sorted((REPO / "infra" / "prometheus" / "tests").glob("*.yml"))


def _promtool() -> str:
    try:
        return prometheus_local.promtool()
    except prometheus_local.PrometheusInfraError as e:
        pytest.fail(f"{e} (CI installs it: .ci/run)")


def test_every_alert_rule_has_a_promtool_unit_test_and_they_pass():
    assert RULES_TESTS
    done = subprocess.run([_promtool(), "test", "rules", *map(str, RULES_TESTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = (REPO / "infra" / "prometheus" / "rules" / "alertdist.yml").read_text()
    tests = "".join(p.read_text() for p in RULES_TESTS)
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(alerts) == 8
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool unit test"


def test_the_written_configuration_is_valid(tmp_path):
    config = prometheus_local.write_config(prometheus_local.PrometheusServer(home=tmp_path, port=1))
    done = subprocess.run([_promtool(), "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "targets").is_dir() and (tmp_path / "jmx-targets").is_dir()
