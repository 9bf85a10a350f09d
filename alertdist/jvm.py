"""The command line of a JVM running the installed Kafka jars (a broker, a tool, MirrorMaker 2), and its JMX agent.

A leaf: production (the mirror) and the development launchers (alertdist.infra) both start JVMs, so this lives
below both. The jars come from `alertdist kafka install` (infra/pom.xml); the marker it writes names the Kafka
version first. The Prometheus JMX exporter agent (``io.prometheus.jmx:jmx_prometheus_javaagent``) is among those
jars; `agent_option` serves ``127.0.0.1:<port>/metrics`` with the rules in infra/prometheus/jmx_kafka.yml, and
`announce` tells the project's Prometheus where (file-based discovery).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = [
    "JMX_RULES",
    "LOG_CONFIG",
    "MARKER",
    "AgentMissingError",
    "JavaError",
    "agent_jar",
    "agent_option",
    "announce",
    "installed_version",
    "java_command",
    "marker_lines",
]

_INFRA_DIR = Path(__file__).resolve().parent / "infra"  # installed as alertdist.infra (package data)
LOG_CONFIG = _INFRA_DIR / "log4j2.properties"
JMX_RULES = _INFRA_DIR / "prometheus" / "jmx_kafka.yml"
MARKER = ".installed"


class JavaError(RuntimeError):
    """No JVM can run the jars (no java, or no jars installed); the message says what to do next."""


class AgentMissingError(RuntimeError):
    """The agent's jar is not among the installed jars."""


def marker_lines(libs_dir: Path) -> list[str]:
    """The marker: the Kafka version, then every artifact the pom asked for when these jars were fetched."""
    marker = libs_dir / MARKER
    return marker.read_text().split() if marker.is_file() else []


def installed_version(libs_dir: Path) -> str | None:
    lines = marker_lines(libs_dir)
    return lines[0] if lines else None


def java_command(libs_dir: Path, heap: str) -> list[str]:
    """``java ... -cp <libs>/*``: the start of every command line that runs the installed jars (a broker, a
    tool, MirrorMaker 2), with the project's log configuration. Out of memory, the JVM exits: an OutOfMemoryError
    in a MirrorMaker task otherwise kills that task for good while the process idles on, copying nothing, where
    an exit is seen and restarted (the mirror deployment; exactly once, from the last committed transaction)."""
    java = shutil.which("java")
    if java is None:
        raise JavaError("java is not on PATH: install Java 17+ and run again")
    if installed_version(libs_dir) is None:
        raise JavaError(f"Kafka is not installed in {libs_dir}: run `alertdist kafka install` first")
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
        "-cp",
        str(libs_dir / "*"),
    ]


def agent_jar(libs_dir: Path) -> Path:
    found = sorted(Path(libs_dir).glob("jmx_prometheus_javaagent-*.jar"))
    if not found:
        raise AgentMissingError(
            f"the JMX exporter agent is not in {libs_dir}: run `alertdist kafka install` (infra/pom.xml fetches it)"
        )
    return found[-1]


def agent_option(libs_dir: Path, port: int, rules: Path = JMX_RULES) -> list[str]:
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
