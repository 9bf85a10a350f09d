"""The Prometheus JMX exporter java agent on the brokers and MirrorMaker 2: their JMX metrics over HTTP.

The agent (``io.prometheus.jmx:jmx_prometheus_javaagent``) is fetched from Maven Central with the Kafka jars
(infra/pom.xml); its ``-javaagent`` option lives in `alertdist.jvm` (production starts JVMs too) and is re-exported
here; `announce` writes the address where the project's Prometheus looks
(``.alertdist/prometheus/jmx-targets``).
"""

from __future__ import annotations

import json
from pathlib import Path

from alertdist.jvm import JMX_RULES, AgentMissingError, agent_jar, agent_option

__all__ = ["RULES", "AgentMissingError", "agent_jar", "agent_option", "announce"]

RULES = JMX_RULES  # kept under its old name: the agent itself is started from alertdist.jvm


def announce(targets_dir: Path, name: str, port: int, labels: dict[str, str]) -> Path:
    """Tell Prometheus (file_sd) where ``name``'s exporter listens; replaces an earlier announcement."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": labels}]))
    scratch.replace(path)
    return path
