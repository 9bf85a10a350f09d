"""A real Apache Kafka cluster (KRaft, no ZooKeeper) on 127.0.0.1, run from jars fetched by Maven.

`install` assembles the broker from Maven Central with `mvn dependency:copy-dependencies` (infra/pom.xml);
`start` formats each node's storage once and launches `java -cp <libs>/* kafka.Kafka` per node; `stop`
signals the pids it recorded. Each node runs the broker and controller roles in one process, with a static
controller quorum, so one node and three nodes are the same code path.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "KafkaCluster",
    "KafkaInfraError",
    "NodeStatus",
    "install",
    "installed_version",
    "kafka_version",
    "start",
    "status",
    "stop",
]

INFRA_DIR = Path(__file__).resolve().parent
POM = INFRA_DIR / "pom.xml"
LOG_CONFIG = INFRA_DIR / "log4j2.properties"
MARKER = ".installed"


class KafkaInfraError(RuntimeError):
    """Installing, starting or stopping the local Kafka failed; the message says what to do next."""


@dataclass(frozen=True)
class KafkaCluster:
    """Where a local cluster lives and which ports it uses.

    Node ``i`` (1-based) listens for clients on ``port + i - 1`` and for its controller on
    ``controller_port + i - 1``; its data and logs live in ``home/nodes/node-i``.
    """

    home: Path
    brokers: int = 1
    port: int = 9092
    controller_port: int = 19092
    heap: str = "512m"
    extra_properties: dict[str, str] = field(default_factory=dict)

    @property
    def libs_dir(self) -> Path:
        return self.home / "libs"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.brokers))

    def node_ids(self) -> range:
        return range(1, self.brokers + 1)

    def node_dir(self, node_id: int) -> Path:
        return self.home / "nodes" / f"node-{node_id}"

    def client_port(self, node_id: int) -> int:
        return self.port + node_id - 1

    def pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def log_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.log"


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    pid: int | None
    running: bool
    answering: bool
    port: int

    def __str__(self) -> str:
        state = "up" if self.answering else ("starting or stuck" if self.running else "down")
        pid = self.pid if self.pid else "-"
        return f"node {self.node_id}: {state} (pid {pid}, 127.0.0.1:{self.port})"


def kafka_version() -> str:
    """The Kafka version pinned in infra/pom.xml."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if version is None or not version.text:
        raise KafkaInfraError(f"{POM} has no <kafka.version> property")
    return version.text.strip()


def installed_version(libs_dir: Path) -> str | None:
    marker = libs_dir / MARKER
    return marker.read_text().strip() if marker.is_file() else None


def install(libs_dir: Path, *, log=print) -> str:
    """Fetch the broker's jars into ``libs_dir``; a no-op when that version is already there.

    The jars are copied into a scratch folder and moved into place only when Maven succeeded,
    so an interrupted install never leaves a half-filled libs folder that looks finished.
    """
    version = kafka_version()
    if installed_version(libs_dir) == version:
        log(f"Kafka {version} already installed in {libs_dir}")
        return version
    if shutil.which("mvn") is None:
        raise KafkaInfraError("Maven (mvn) is not on PATH: install Maven 3.8+ and Java 17+, then run again")
    scratch = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    log(f"Fetching Apache Kafka {version} from Maven Central into {libs_dir} (first time only, about 55 MB)...")
    cmd = [
        "mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={scratch}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaInfraError(
            f"mvn could not fetch Kafka {version} (exit {result.returncode}); check network access to Maven "
            f"Central and run again.\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    (scratch / MARKER).write_text(version + "\n")
    shutil.rmtree(libs_dir, ignore_errors=True)
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch.rename(libs_dir)
    log(f"Kafka {version} installed ({len(list(libs_dir.glob('*.jar')))} jars)")
    return version


def _server_properties(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
    voters = ",".join(f"{i}@127.0.0.1:{cluster.controller_port + i - 1}" for i in cluster.node_ids())
    port = cluster.client_port(node_id)
    ctrl = cluster.controller_port + node_id - 1
    replicas = str(min(3, cluster.brokers))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cluster.node_dir(node_id) / "data"),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": str(min(2, cluster.brokers)),
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": str(min(2, cluster.brokers)),
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(16 * 1024 * 1024),
        "replica.fetch.max.bytes": str(16 * 1024 * 1024),
    }
    props.update(cluster.extra_properties)
    return props


def _write_properties(path: Path, props: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def _java(cluster: KafkaCluster, heap: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise KafkaInfraError("java is not on PATH: install Java 17+ and run again")
    if installed_version(cluster.libs_dir) is None:
        raise KafkaInfraError(f"Kafka is not installed in {cluster.libs_dir}: run `alertdist kafka install` first")
    return [
        java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
        "-cp", str(cluster.libs_dir / "*"),
    ]


def _cluster_id(cluster: KafkaCluster) -> str:
    """One id for every node of the cluster, kept beside the nodes so restarts reuse it."""
    path = cluster.home / "nodes" / "cluster.id"
    if path.is_file():
        return path.read_text().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def _format_storage(cluster: KafkaCluster, node_id: int, config: Path) -> None:
    if (cluster.node_dir(node_id) / "data" / "meta.properties").is_file():
        return  # formatted before: restarting keeps the data
    cmd = _java(cluster, "256m") + [
        "kafka.tools.StorageTool", "format", "-t", _cluster_id(cluster), "-c", str(config),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaInfraError(
            f"formatting storage of node {node_id} in {cluster.node_dir(node_id)} failed:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answering(bootstrap: str, timeout: float = 3.0) -> int:
    """How many brokers the cluster reports, or 0 when it does not answer."""
    from confluent_kafka.admin import AdminClient

    ports = [int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")]
    if not any(_port_open(p) for p in ports):
        return 0
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0})
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return 0


def start(cluster: KafkaCluster, *, timeout: float = 90.0, log=print) -> str:
    """Start every node that is not already running and wait until the cluster answers.

    Returns the bootstrap servers. Nodes already running are reused, so calling it twice is harmless.
    """
    for node_id in cluster.node_ids():
        if _read_pid(cluster.pid_file(node_id)):
            log(f"Kafka node {node_id} already running (pid {_read_pid(cluster.pid_file(node_id))})")
            continue
        if _port_open(cluster.client_port(node_id)):
            raise KafkaInfraError(
                f"port {cluster.client_port(node_id)} is taken by a process this project did not start; "
                "stop it or choose other ports (--port)"
            )
        config = cluster.node_dir(node_id) / "server.properties"
        _write_properties(config, _server_properties(cluster, node_id))
        _format_storage(cluster, node_id, config)
        with open(cluster.log_file(node_id), "ab") as out:
            proc = subprocess.Popen(
                _java(cluster, cluster.heap) + ["kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the command that started it; stopped by `stop`
            )
        cluster.pid_file(node_id).write_text(f"{proc.pid}\n")
        log(f"Kafka node {node_id} starting (pid {proc.pid}, 127.0.0.1:{cluster.client_port(node_id)}, "
            f"log {cluster.log_file(node_id)})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answering(cluster.bootstrap_servers) >= cluster.brokers:
            log(f"Kafka answering at {cluster.bootstrap_servers}")
            return cluster.bootstrap_servers
        dead = [n for n in cluster.node_ids() if _read_pid(cluster.pid_file(n)) is None]
        if dead:
            tail = cluster.log_file(dead[0]).read_text(errors="replace")[-3000:]
            raise KafkaInfraError(f"Kafka node {dead[0]} exited while starting; its log ends:\n{tail}")
        time.sleep(0.5)
    raise KafkaInfraError(
        f"Kafka did not answer at {cluster.bootstrap_servers} within {timeout:.0f} s; "
        f"see {cluster.log_file(1)}"
    )


def stop(cluster: KafkaCluster, *, timeout: float = 30.0, log=print) -> None:
    """Stop every node this project started: SIGTERM (a clean shutdown), SIGKILL if it hangs."""
    for node_id in cluster.node_ids():
        stop_node(cluster, node_id, timeout=timeout, log=log)


def stop_node(cluster: KafkaCluster, node_id: int, *, timeout: float = 30.0, kill: bool = False, log=print) -> None:
    """Stop one node; ``kill=True`` sends SIGKILL at once (fault-injection tests)."""
    pid = _read_pid(cluster.pid_file(node_id))
    if pid is None:
        log(f"Kafka node {node_id} is not running")
        cluster.pid_file(node_id).unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid):
        log(f"Kafka node {node_id} (pid {pid}) did not stop within {timeout:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            _reap(pid)
            time.sleep(0.1)
    cluster.pid_file(node_id).unlink(missing_ok=True)
    log(f"Kafka node {node_id} stopped")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(cluster: KafkaCluster) -> list[NodeStatus]:
    result = []
    for node_id in cluster.node_ids():
        pid = _read_pid(cluster.pid_file(node_id))
        port = cluster.client_port(node_id)
        answering = pid is not None and _answering(f"127.0.0.1:{port}", timeout=2.0) > 0
        result.append(NodeStatus(node_id, pid, pid is not None, answering, port))
    return result

