"""The Prometheus JMX exporter java agent on the brokers and MirrorMaker 2: their JMX metrics over HTTP.

The agent (``io.prometheus.jmx:jmx_prometheus_javaagent``) is fetched from Maven Central with the Kafka jars
(infra/pom.xml); `agent_option` is the ``-javaagent`` argument that serves ``127.0.0.1:<port>/metrics`` with the
rules in infra/prometheus/jmx_kafka.yml; `announce` writes the address where the project's Prometheus looks
(``.alertdist/prometheus/jmx-targets``).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RULES", "AgentMissingError", "agent_jar", "agent_option", "announce"]

RULES = Path(__file__).resolve().parent / "prometheus" / "jmx_kafka.yml"


class AgentMissingError(RuntimeError):
    """The agent's jar is not among the installed jars."""


def agent_jar(libs_dir: Path) -> Path:
    found = sorted(Path(libs_dir).glob("jmx_prometheus_javaagent-*.jar"))
    if not found:
        raise AgentMissingError(
            f"the JMX exporter agent is not in {libs_dir}: run `alertdist kafka install` (infra/pom.xml fetches it)"
        )
    return found[-1]


def agent_option(libs_dir: Path, port: int, rules: Path = RULES) -> list[str]:
    """``-javaagent:...=127.0.0.1:<port>:<rules>``: the JVM serves its metrics on loopback ``port``."""
    return [f"-javaagent:{agent_jar(libs_dir)}=127.0.0.1:{port}:{rules}"]


def announce(targets_dir: Path, name: str, port: int, labels: dict[str, str]) -> Path:
    """Tell Prometheus (file_sd) where ``name``'s exporter listens; replaces an earlier announcement."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": labels}]))
    scratch.replace(path)
    return path
