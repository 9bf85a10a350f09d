"""A real Apache Kafka cluster (KRaft, no ZooKeeper) on 127.0.0.1, run from jars fetched by Maven.

`install` assembles the broker from Maven Central with `mvn dependency:copy-dependencies` (infra/pom.xml);
`start` formats each node's storage once and launches `java -cp <libs>/* kafka.Kafka` per node; `stop`
signals the pids it recorded. Each node runs the broker and controller roles in one process, with a static
controller quorum, so one node and three nodes are the same code path.

Security is opt-in (``KafkaCluster(security="sasl" | "sasl_ssl")``, ``alertdist kafka start --secure``): each
node then adds a SCRAM-SHA-512 listener (``SASL``, plain or over TLS with certificates from make_certs.sh) for
outside consumers, and the standard authorizer denies whatever no ACL allows. The loopback PLAINTEXT listener
stays for the system's own services and the brokers themselves: its principal, ``User:ANONYMOUS``, is a super
user, so in production that listener must be bound to loopback or a private network only.

``security="secure_only"`` (``alertdist kafka start --secure-only``) has no PLAINTEXT listener at all: clients
and the brokers among themselves use the SCRAM-SHA-512 listener over TLS on the client port (the brokers as the
``broker`` user), the controllers a TLS listener with SASL/PLAIN (KRaft cannot serve SCRAM to its controllers:
the credentials live in the metadata log they replicate). ``admin`` and ``broker`` are super users, their SCRAM
credentials written into the storage at format time; every password is generated once into ``home/secrets``.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.infra import jmx_exporter
from alertdist.jvm import MARKER, JavaError, installed_version, java_command, marker_lines
from alertdist.supervisor import Supervised, stop_all
from alertdist.supervisor import alive as process_alive

__all__ = [
    "SECURITY_MODES",
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
POM = INFRA_DIR / "pom.xml"
MAKE_CERTS = INFRA_DIR / "make_certs.sh"

#: ``none``: PLAINTEXT only, no authorizer (the simple embedded default). ``sasl``: adds a SASL_PLAINTEXT
#: SCRAM-SHA-512 listener and ACLs. ``sasl_ssl``: the same listener over TLS. ``secure_only``: no PLAINTEXT
#: listener, everyone on TLS (see the module's docstring).
SECURITY_MODES = ("none", "sasl", "sasl_ssl", "secure_only")
#: The super users of a ``secure_only`` cluster: the operator's admin, the brokers, the controllers.
SUPER_USERS = ("admin", "broker", "controller")
SCRAM_MECHANISM = "SCRAM-SHA-512"
SECURE_LISTENER = "SASL"
#: How long a SASL session lasts before its client must log in again (KIP-368). Without it a connection opened
#: before a user was removed or its password changed keeps working for as long as it stays open. One minute bounds
#: that window; a re-login is one SCRAM exchange per connection per minute, which costs nothing measurable.
REAUTH_MS = 60_000
_REAUTHENTICATION = {"connections.max.reauth.ms": str(REAUTH_MS)}
#: The umask of every process started here: what it creates (data, logs, databases) is its owner's only.
PRIVATE_UMASK = 0o077
#: Each mode's strength: data started in one mode never starts again in a weaker one (`_check_security`).
_STRENGTH = {"none": 0, "sasl": 1, "sasl_ssl": 2, "secure_only": 3}


class KafkaInfraError(RuntimeError):
    """Installing, starting or stopping the local Kafka failed; the message says what to do next."""


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


_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def kafka_version() -> str:
    """The Kafka version pinned in infra/pom.xml."""
    version = ET.parse(POM).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if version is None or not version.text:
        raise KafkaInfraError(f"{POM} has no <kafka.version> property")
    return version.text.strip()


def pom_artifacts() -> list[str]:
    """Every dependency infra/pom.xml asks for, as ``group:artifact:version`` with its properties filled in."""
    root = ET.parse(POM).getroot()
    props = {p.tag.split("}")[-1]: (p.text or "").strip() for p in root.find("m:properties", _POM_NS)}

    def text(dependency: ET.Element, name: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], dependency.find(f"m:{name}", _POM_NS).text.strip())

    return [
        ":".join(text(d, name) for name in ("groupId", "artifactId", "version"))
        for d in root.findall("m:dependencies/m:dependency", _POM_NS)
    ]


def install(libs_dir: Path, *, log=print) -> str:
    """Fetch the jars infra/pom.xml asks for into ``libs_dir``; a no-op when the marker records exactly those.

    The marker lists every artifact, not just the Kafka version, so a folder fetched before the pom gained one
    (MirrorMaker 2's) is fetched again. The jars are copied into a scratch folder and moved into place only when
    Maven succeeded, so an interrupted install never leaves a half-filled libs folder that looks finished.
    """
    libs_dir = Path(libs_dir).absolute()  # mvn resolves a relative output folder against infra/
    version = kafka_version()
    wanted = [version, *pom_artifacts()]
    if marker_lines(libs_dir) == wanted:
        log(f"Kafka {version} already installed in {libs_dir}")
        return version
    if shutil.which("mvn") is None:
        raise KafkaInfraError("Maven (mvn) is not on PATH: install Maven 3.8+ and Java 17+, then run again")
    scratch = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    log(
        f"Fetching Apache Kafka {version} and MirrorMaker 2 from Maven Central into {libs_dir} "
        "(first time, or when infra/pom.xml changed; about 60 MB)..."
    )
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={scratch}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaInfraError(
            f"mvn could not fetch Kafka {version} (exit {result.returncode}); check network access to Maven "
            f"Central and run again.\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    (scratch / MARKER).write_text("\n".join(wanted) + "\n")
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
    if cluster.brokers >= 3:
        # a floor for topics created without it (filter outputs, internal ones): acks=all then means two copies
        props["min.insync.replicas"] = "2"
    if cluster.secure_only:
        props.update(_secure_only_properties(cluster, node_id))
    elif cluster.secured:
        props.update(_security_properties(cluster, node_id))
    props.update(cluster.extra_properties)
    return props


def _security_properties(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
    """The SCRAM listener beside PLAINTEXT, and ACLs enforced by the standard (KRaft) authorizer.

    PLAINTEXT and CONTROLLER connections authenticate as User:ANONYMOUS, which is a super user: the brokers,
    the controllers and the system's own services use them. Bind that listener to loopback/private networks only.
    """
    port = cluster.client_port(node_id)
    secure = cluster.secure_client_port(node_id)
    ctrl = cluster.controller_port + node_id - 1
    protocol = "SASL_SSL" if cluster.security == "sasl_ssl" else "SASL_PLAINTEXT"
    name = SECURE_LISTENER.lower()
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},{SECURE_LISTENER}://127.0.0.1:{secure},"
        f"CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},{SECURE_LISTENER}://127.0.0.1:{secure}",
        "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{SECURE_LISTENER}:{protocol}",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{name}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{name}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:ANONYMOUS",
        **_REAUTHENTICATION,
    }
    if cluster.security == "sasl_ssl":
        password = (cluster.certs_dir / "keystore.password").read_text().strip()
        props.update(
            {
                f"listener.name.{name}.ssl.keystore.type": "PKCS12",
                f"listener.name.{name}.ssl.keystore.location": str(cluster.certs_dir / "broker.p12"),
                f"listener.name.{name}.ssl.keystore.password": password,
                f"listener.name.{name}.ssl.key.password": password,
                f"listener.name.{name}.ssl.client.auth": "none",
            }
        )
    return props


def _secure_only_properties(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
    """No PLAINTEXT anywhere: SCRAM over TLS for clients and brokers, PLAIN over TLS for the controllers."""
    port = cluster.client_port(node_id)
    ctrl = cluster.controller_port + node_id - 1
    keystore = (cluster.certs_dir / "keystore.password").read_text().strip()
    scram, name = SCRAM_MECHANISM, SECURE_LISTENER.lower()
    controller = cluster.password("controller")
    return {
        "listeners": f"{SECURE_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": f"{SECURE_LISTENER}://127.0.0.1:{port}",
        "listener.security.protocol.map": f"{SECURE_LISTENER}:SASL_SSL,CONTROLLER:SASL_SSL",
        "inter.broker.listener.name": SECURE_LISTENER,
        "sasl.enabled.mechanisms": scram,
        "sasl.mechanism.inter.broker.protocol": scram,
        f"listener.name.{name}.sasl.enabled.mechanisms": scram,
        f"listener.name.{name}.{scram.lower()}.sasl.jaas.config": "org.apache.kafka.common.security.scram."
        f'ScramLoginModule required username="broker" password="{cluster.password("broker")}";',
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
        f'required username="controller" password="{controller}" user_controller="{controller}";',
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(cluster.certs_dir / "broker.p12"),
        "ssl.keystore.password": keystore,
        "ssl.key.password": keystore,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(cluster.certs_dir / "truststore.p12"),
        "ssl.truststore.password": keystore,
        "ssl.client.auth": "none",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
        **_REAUTHENTICATION,
    }


def _make_passwords(cluster: KafkaCluster) -> None:
    """Generate each super user's password once (kept, like the keystore's, in a 0600 file)."""
    folder = cluster.home / "secrets"
    for user in SUPER_USERS:
        path = folder / f"{user}.password"
        if not path.exists():
            _write_private(path, base64.urlsafe_b64encode(os.urandom(24)).decode() + "\n")


def make_certs(cluster: KafkaCluster, *, names: tuple[str, ...] = ("localhost", "127.0.0.1"), log=print) -> Path:
    """Create the TLS certificates of ``cluster`` with infra/make_certs.sh (a no-op when they exist)."""
    result = subprocess.run(["bash", str(MAKE_CERTS), str(cluster.certs_dir), *names], capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaInfraError(
            f"making TLS certificates in {cluster.certs_dir} with {MAKE_CERTS} failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    log(result.stdout.strip())
    return cluster.certs_dir


def _write_properties(path: Path, props: dict[str, str]) -> None:
    scratch = path.with_suffix(".partial")
    _write_private(scratch, "".join(f"{k}={v}\n" for k, v in props.items()))  # may hold passwords
    scratch.replace(path)


def _security_file(cluster: KafkaCluster) -> Path:
    return cluster.home / "nodes" / "security"


def recorded_security(cluster: KafkaCluster) -> str | None:
    """The security mode this cluster's data was last started with (None before its first start)."""
    path = _security_file(cluster)
    return path.read_text().strip() if path.is_file() else None


def _check_security(cluster: KafkaCluster) -> None:
    """Refuse to reopen a secured cluster in a weaker mode: without its ACLs that would expose every programme to
    anyone; without TLS, passwords and data on the wire; with a PLAINTEXT listener, a super user anyone local can be.

    Data formatted before the mode was recorded counts as secured unless it says otherwise: its mode is unknown."""
    recorded = recorded_security(cluster)
    if recorded is None and any(
        (cluster.node_dir(n) / "data" / "meta.properties").is_file() for n in cluster.node_ids()
    ):
        recorded = "sasl"  # formatted, mode unknown (the record was removed): at least not open
    if recorded is not None and _STRENGTH.get(recorded, max(_STRENGTH.values())) > _STRENGTH[cluster.security]:
        what = (
            "let anyone read every programme"
            if not cluster.secured
            else "weaken how it is reached (TLS, or no PLAINTEXT super-user listener)"
        )
        raise KafkaInfraError(
            f"the cluster in {cluster.home} was started with security {recorded!r}; starting it with "
            f"{cluster.security!r} would {what}. Start it with --security {recorded} (or use a fresh --data-dir)"
        )
    _write_private(_security_file(cluster), cluster.security + "\n")


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
    _write_private(path, cluster_id + "\n")
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
    _write_private(path, "\n".join(quoted) + "\n")
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


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
    _make_private(cluster.home)
    _check_security(cluster)
    if cluster.security in ("sasl_ssl", "secure_only"):
        make_certs(cluster, log=log)
    if cluster.secure_only:
        _make_passwords(cluster)
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


def _make_private(home: Path) -> None:
    """The cluster's folder and its nodes' are the owner's only (0700): data, logs and secrets live below."""
    for folder in (home, home / "nodes"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)


def _ephemeral_ports_start() -> int:
    """Where the kernel's range for client sockets' local ports begins (Linux: 32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int) -> int:
    """A port p with p..p+count-1 and p+10000.. (client and controller listeners) free, all below the ephemeral
    range: a port from that range can be handed to some client socket (the brokers' own connections included)
    between this check and the broker's bind, which made a 3-broker start fail with "Address already in use"."""
    top = _ephemeral_ports_start() - 10000 - count
    chooser = random.Random()
    for _ in range(500):
        port = chooser.randrange(10000, top)
        if all(_is_free(port + i) and _is_free(port + 10000 + i) for i in range(count)):
            return port
    raise KafkaInfraError(f"no {count} free port pairs found between 10000 and {top + 10000 + count}")


def free_port() -> int:
    """One free loopback port below the ephemeral range (for a listener such as MirrorMaker's internal REST)."""
    return free_ports(1)


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
