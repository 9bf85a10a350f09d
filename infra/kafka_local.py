"""A real Apache Kafka cluster (KRaft, no ZooKeeper) on 127.0.0.1, run from jars fetched by Maven.

`install` assembles the broker from Maven Central with `mvn dependency:copy-dependencies` (infra/pom.xml);
`start` formats each node's storage once and launches `java -cp <libs>/* kafka.Kafka` per node; `stop`
signals the pids it recorded. Each node runs the broker and controller roles in one process, with a static
controller quorum, so one node and three nodes are the same code path.

Security is opt-in (``KafkaCluster(security=...)``, ``alertdist kafka start --secure``): see `kafka_security`.
"""

from __future__ import annotations

import argparse
import base64
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.infra import jmx_exporter
from alertdist.infra.kafka_install import KafkaInfraError, install, kafka_version, pom_artifacts
from alertdist.infra.kafka_security import (
    PRIVATE_UMASK,
    REAUTH_MS,
    SCRAM_MECHANISM,
    SECURE_LISTENER,
    SECURITY_MODES,
    SUPER_USERS,
    check_security,
    make_certs,
    make_passwords,
    make_private,
    recorded_security,
    secure_only_properties,
    security_properties,
    write_private,
)
from alertdist.infra.ports import free_port, free_ports
from alertdist.jvm import MARKER, JavaError, installed_version, java_command
from alertdist.supervisor import Supervised, stop_all
from alertdist.supervisor import alive as process_alive

__all__ = [
    "MARKER",
    "PRIVATE_UMASK",
    "REAUTH_MS",
    "SCRAM_MECHANISM",
    "SECURE_LISTENER",
    "SECURITY_MODES",
    "SUPER_USERS",
    "KafkaCluster",
    "KafkaInfraError",
    "NodeStatus",
    "free_port",
    "free_ports",
    "install",
    "installed_version",
    "java_command",
    "kafka_version",
    "make_certs",
    "pom_artifacts",
    "process_alive",
    "recorded_security",
    "start",
    "start_on_free_ports",
    "status",
    "stop",
    "stop_node",
    "stop_under",
]

INFRA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class KafkaCluster:
    """Where a local cluster lives and which ports it uses.

    Node ``i`` (1-based) listens for clients on ``port + i - 1`` and for its controller on
    ``controller_port + i - 1``; with security on, for SCRAM clients on ``secure_port + i - 1`` (default
    ``port + 100``). Its data and logs live in ``home/nodes/node-i``, certificates in ``home/certs``.
    """

    home: Path
    brokers: int = 1
    port: int = 9092
    controller_port: int = 19092
    heap: str = "512m"
    extra_properties: dict[str, str] = field(default_factory=dict)
    security: str = "none"
    secure_port: int | None = None
    jmx_port: int | None = None  # node i serves its JMX metrics (Prometheus JMX exporter) on jmx_port + i - 1

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise KafkaInfraError(f"security must be one of {', '.join(SECURITY_MODES)}, got {self.security!r}")
        if self.brokers < 1:
            raise KafkaInfraError(f"a cluster needs at least one node, got brokers={self.brokers}")

    @property
    def secured(self) -> bool:
        return self.security != "none"

    @property
    def secure_only(self) -> bool:
        return self.security == "secure_only"

    @property
    def certs_dir(self) -> Path:
        return self.home / "certs"

    @property
    def ca_location(self) -> Path | None:
        """The CA certificate (PEM) SASL_SSL clients must trust; None unless the cluster uses TLS."""
        return self.certs_dir / "ca.pem" if self.security in ("sasl_ssl", "secure_only") else None

    def password(self, user: str) -> str:
        """The generated password of a super user of a ``secure_only`` cluster (``SUPER_USERS``)."""
        return (self.home / "secrets" / f"{user}.password").read_text().strip()

    @property
    def admin_config(self) -> dict[str, str]:
        """librdkafka settings to reach the cluster as its super user (nothing to add but on ``secure_only``)."""
        if not self.secure_only:
            return {}
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": SCRAM_MECHANISM,
            "sasl.username": "admin",
            "sasl.password": self.password("admin"),
            "ssl.ca.location": str(self.ca_location),
        }

    @property
    def secure_bootstrap_servers(self) -> str:
        """Where SCRAM clients connect; empty when security is off."""
        if not self.secured:
            return ""
        return ",".join(f"127.0.0.1:{self.secure_client_port(i)}" for i in self.node_ids())

    def secure_client_port(self, node_id: int) -> int:
        if self.secure_only:
            return self.client_port(node_id)  # the only client listener
        return (self.secure_port or self.port + 100) + node_id - 1

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
    secure_port: int | None = None

    def __str__(self) -> str:
        state = "up" if self.answering else ("starting or stuck" if self.running else "down")
        pid = self.pid if self.pid else "-"
        secure = f", SCRAM 127.0.0.1:{self.secure_port}" if self.secure_port else ""
        return f"node {self.node_id}: {state} (pid {pid}, 127.0.0.1:{self.port}{secure})"


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
    if cluster.brokers >= 3:
        # a floor for topics created without it (filter outputs, internal ones): acks=all then means two copies
        props["min.insync.replicas"] = "2"
    if cluster.secure_only:
        props.update(secure_only_properties(cluster, node_id))
    elif cluster.secured:
        props.update(security_properties(cluster, node_id))
    props.update(cluster.extra_properties)
    return props


def _write_properties(path: Path, props: dict[str, str]) -> None:
    scratch = path.with_suffix(".partial")
    write_private(scratch, "".join(f"{k}={v}\n" for k, v in props.items()))  # may hold passwords
    scratch.replace(path)


def _java(cluster: KafkaCluster, heap: str) -> list[str]:
    try:
        return java_command(cluster.libs_dir, heap)
    except JavaError as e:
        raise KafkaInfraError(str(e)) from None


def _jmx_agent(cluster: KafkaCluster, node_id: int) -> list[str]:
    """The JMX exporter agent's option for a node, when the cluster has a ``jmx_port``."""
    if cluster.jmx_port is None:
        return []
    return jmx_exporter.agent_option(cluster.libs_dir, cluster.jmx_port + node_id - 1)


def _cluster_id(cluster: KafkaCluster) -> str:
    """One id for every node of the cluster, kept beside the nodes so restarts reuse it."""
    path = cluster.home / "nodes" / "cluster.id"
    if path.is_file():
        return path.read_text().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    write_private(path, cluster_id + "\n")
    return cluster_id


def _format_storage(cluster: KafkaCluster, configs: dict[int, Path]) -> None:
    """Format the nodes never formatted before, all at once (each is a JVM start: seconds apiece)."""
    pending = {n: c for n, c in configs.items() if not (cluster.node_dir(n) / "data" / "meta.properties").is_file()}
    if not pending:
        return  # formatted before: restarting keeps the data
    cluster_id = _cluster_id(cluster)
    scram = []  # a secure_only cluster's brokers and admin must log in before any credential could be created
    if cluster.secure_only:
        for user in ("admin", "broker"):
            scram += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={cluster.password(user)}]"]
    running = {}
    for n, c in pending.items():
        # `=`: an id may begin with "-", which would otherwise read as an option. The tool and its arguments (the
        # passwords) go in a 0600 argument file (`java @file`): a command line is readable by every local user
        arguments = _argument_file(
            c.with_name("format.args"),
            ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(c), *scram],
        )
        running[n] = (
            arguments,
            subprocess.Popen(
                [*_java(cluster, "256m"), f"@{arguments}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                umask=PRIVATE_UMASK,
            ),
        )
    failures = []
    for node_id, (arguments, proc) in running.items():
        output, _ = proc.communicate()
        arguments.unlink(missing_ok=True)
        if proc.returncode != 0:
            failures.append(f"node {node_id} in {cluster.node_dir(node_id)}:\n{output[-2000:]}")
    if failures:
        raise KafkaInfraError("formatting storage failed for " + "\n".join(failures))


def _argument_file(path: Path, arguments: list[str]) -> Path:
    """A java launcher argument file (0600) holding ``arguments``, each quoted (backslashes and quotes escaped)."""
    quoted = ['"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in arguments]
    write_private(path, "\n".join(quoted) + "\n")
    return path


def _node(cluster: KafkaCluster, node_id: int) -> Supervised:
    """Node ``node_id`` as a supervised process: a pid counts as it while it runs kafka.Kafka on its own config."""
    config = cluster.node_dir(node_id) / "server.properties"
    return Supervised(f"Kafka node {node_id}", cluster.pid_file(node_id), ("kafka.Kafka", str(config)))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answering(bootstrap: str, timeout: float = 3.0, config: dict[str, str] | None = None) -> int:
    """How many brokers the cluster reports, or 0 when it does not answer (``config``: how to log in)."""
    from confluent_kafka.admin import AdminClient

    ports = [int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")]
    if not any(_port_open(p) for p in ports):
        return 0
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0, **(config or {})}
    )
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return 0


def start(cluster: KafkaCluster, *, timeout: float = 90.0, log=print) -> str:
    """Start every node that is not already running and wait until the cluster answers.

    Returns the bootstrap servers (PLAINTEXT). Nodes already running are reused, so calling it twice is
    harmless; a node that died (or was killed) is started again on its own data.
    """
    make_private(cluster.home)
    check_security(cluster)
    if cluster.security in ("sasl_ssl", "secure_only"):
        make_certs(cluster, log=log)
    if cluster.secure_only:
        make_passwords(cluster)
    to_start: dict[int, Path] = {}
    for node_id in cluster.node_ids():
        running = _node(cluster, node_id).pid()
        if running:
            log(f"Kafka node {node_id} already running (pid {running})")
            continue
        ports = [cluster.client_port(node_id), cluster.controller_port + node_id - 1]
        if cluster.secured and not cluster.secure_only:
            ports.append(cluster.secure_client_port(node_id))
        taken = [p for p in ports if _port_open(p)]
        if taken:
            raise KafkaInfraError(
                f"port {taken[0]} (node {node_id}) is taken by a process this project did not start; "
                "stop it or choose other ports (--port)"
            )
        config = cluster.node_dir(node_id) / "server.properties"
        _write_properties(config, _server_properties(cluster, node_id))
        to_start[node_id] = config
    _format_storage(cluster, to_start)
    started: dict[int, subprocess.Popen] = {}
    for node_id, config in to_start.items():
        proc = started[node_id] = _node(cluster, node_id).start(
            _java(cluster, cluster.heap) + _jmx_agent(cluster, node_id) + ["kafka.Kafka", str(config)],
            log_file=cluster.log_file(node_id),
            umask=PRIVATE_UMASK,  # its data, logs and snapshots: the owner's only
        )
        secure = f", {cluster.security} 127.0.0.1:{cluster.secure_client_port(node_id)}" if cluster.secured else ""
        log(
            f"Kafka node {node_id} starting (pid {proc.pid}, 127.0.0.1:{cluster.client_port(node_id)}{secure}, "
            f"log {cluster.log_file(node_id)})"
        )
    return _wait_until_answering(cluster, started, timeout=timeout, log=log)


def _wait_until_answering(cluster: KafkaCluster, started: dict[int, subprocess.Popen], *, timeout: float, log) -> str:
    """Wait until every broker answers; a node that exits first fails the start with its first error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answering(cluster.bootstrap_servers, config=cluster.admin_config) >= cluster.brokers:
            log(f"Kafka answering at {cluster.bootstrap_servers}")
            return cluster.bootstrap_servers
        dead = [
            n
            for n in cluster.node_ids()
            if (started[n].poll() is not None if n in started else _node(cluster, n).pid() is None)
        ]
        if dead:
            text = cluster.log_file(dead[0]).read_text(errors="replace")
            lines = text.splitlines()
            first = next((i for i, line in enumerate(lines) if " ERROR " in line or " FATAL " in line), None)
            cause = "first error:\n" + "\n".join(lines[first : first + 3]) + "\n" if first is not None else ""
            raise KafkaInfraError(
                f"Kafka node {dead[0]} exited while starting ({cluster.log_file(dead[0])}); "
                f"{cause}its log ends:\n{text[-3000:]}"
            )
        time.sleep(0.5)
    raise KafkaInfraError(
        f"Kafka did not answer at {cluster.bootstrap_servers} within {timeout:.0f} s; see {cluster.log_file(1)}"
    )


def start_on_free_ports(
    folder: Path, *, libs: Path, brokers: int = 1, heap: str = "384m", security: str = "none", log=print
) -> KafkaCluster:
    """A fresh cluster in ``folder`` on free loopback ports, running the jars in ``libs`` (installed there first
    when missing), for tests, benchmarks and CI. If another process takes one of the ports between the choice
    and the broker's bind, it is retried twice on new ports, in ``folder/retry-N``; ``stop_under(folder)``
    stops whichever started."""
    libs = Path(libs).absolute()  # each node folder links to it
    install(libs, log=log)
    for attempt in range(3):
        home = folder if attempt == 0 else folder / f"retry-{attempt}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "libs").symlink_to(libs, target_is_directory=True)
        port = free_ports(brokers)
        cluster = KafkaCluster(
            home=home, brokers=brokers, port=port, controller_port=port + 10000, heap=heap, security=security
        )
        try:
            start(cluster, log=log)
            return cluster
        except KafkaInfraError as e:
            stop(cluster, log=log)
            if "Address already in use" not in str(e) or attempt == 2:  # the node's first error names it
                raise
    raise AssertionError("unreachable")


def stop_under(folder: Path, *, timeout: float = 30.0, log=print) -> int:
    """Stop every node whose pid file lies under ``folder`` (any cluster started there, retries included);
    returns how many clusters had one."""
    homes: dict[Path, int] = {}
    for pid_file in folder.glob("**/nodes/node-*/kafka.pid"):
        home, node_id = pid_file.parents[2], int(pid_file.parent.name.removeprefix("node-"))
        homes[home] = max(homes.get(home, 0), node_id)
    for home, brokers in homes.items():
        stop(KafkaCluster(home=home, brokers=brokers), timeout=timeout, log=log)
    return len(homes)


def stop(cluster: KafkaCluster, *, timeout: float = 30.0, log=print) -> None:
    """Stop every node this project started: SIGTERM to all at once (a clean shutdown), SIGKILL if one hangs.

    All at once, because stopping the nodes of a 3-node quorum one by one leaves the last one unable to finish
    its controlled shutdown (no controller majority left) until the timeout.
    """
    stop_all([_node(cluster, n) for n in cluster.node_ids()], timeout=timeout, log=log)


def stop_node(cluster: KafkaCluster, node_id: int, *, timeout: float = 30.0, kill: bool = False, log=print) -> None:
    """Stop one node; ``kill=True`` sends SIGKILL at once (fault-injection tests)."""
    _node(cluster, node_id).stop(timeout=timeout, kill=kill, log=log)


def status(cluster: KafkaCluster) -> list[NodeStatus]:
    result = []
    for node_id in cluster.node_ids():
        pid = _node(cluster, node_id).pid()
        port = cluster.client_port(node_id)
        answering = pid is not None and _answering(f"127.0.0.1:{port}", timeout=2.0, config=cluster.admin_config) > 0
        secure = cluster.secure_client_port(node_id) if cluster.secured else None
        result.append(NodeStatus(node_id, pid, pid is not None, answering, port, secure))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m alertdist.infra.kafka_local start-on-free-ports FOLDER --libs LIBS`` prints the bootstrap
    servers of a fresh cluster; ``stop-under FOLDER`` stops it (infra/with_test_services.sh uses both)."""
    parser = argparse.ArgumentParser(prog="python -m alertdist.infra.kafka_local", description=main.__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    start_parser = actions.add_parser("start-on-free-ports", help="start a fresh cluster on free ports in FOLDER")
    start_parser.add_argument("folder", type=Path)
    start_parser.add_argument("--libs", type=Path, required=True, help="the Kafka jars (installed there if missing)")
    start_parser.add_argument("--brokers", type=int, default=1)
    start_parser.add_argument("--heap", default="512m")
    stop_parser = actions.add_parser("stop-under", help="stop every node started under FOLDER")
    stop_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        if args.action == "start-on-free-ports":
            cluster = start_on_free_ports(args.folder, libs=args.libs, brokers=args.brokers, heap=args.heap, log=log)
            print(cluster.bootstrap_servers)
        else:
            stop_under(args.folder, log=log)
    except KafkaInfraError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
