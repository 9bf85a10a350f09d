"""The local Kafka's security: its SCRAM and TLS listeners' properties, its super users' passwords and
certificates, and the rule that a cluster never starts again in a weaker mode than its data was started in.

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

import base64
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from alertdist.infra.kafka_install import KafkaInfraError

if TYPE_CHECKING:
    from alertdist.infra.kafka_local import KafkaCluster

__all__ = [
    "PRIVATE_UMASK",
    "REAUTH_MS",
    "SCRAM_MECHANISM",
    "SECURE_LISTENER",
    "SECURITY_MODES",
    "SUPER_USERS",
    "check_security",
    "make_certs",
    "make_passwords",
    "make_private",
    "recorded_security",
    "secure_only_properties",
    "security_properties",
    "write_private",
]

MAKE_CERTS = Path(__file__).resolve().parent / "make_certs.sh"

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
#: Each mode's strength: data started in one mode never starts again in a weaker one (`check_security`).
_STRENGTH = {"none": 0, "sasl": 1, "sasl_ssl": 2, "secure_only": 3}


def security_properties(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
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


def secure_only_properties(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
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


def make_passwords(cluster: KafkaCluster) -> None:
    """Generate each super user's password once (kept, like the keystore's, in a 0600 file)."""
    folder = cluster.home / "secrets"
    for user in SUPER_USERS:
        path = folder / f"{user}.password"
        if not path.exists():
            write_private(path, base64.urlsafe_b64encode(os.urandom(24)).decode() + "\n")


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


def _security_file(cluster: KafkaCluster) -> Path:
    return cluster.home / "nodes" / "security"


def recorded_security(cluster: KafkaCluster) -> str | None:
    """The security mode this cluster's data was last started with (None before its first start)."""
    path = _security_file(cluster)
    return path.read_text().strip() if path.is_file() else None


def check_security(cluster: KafkaCluster) -> None:
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
    write_private(_security_file(cluster), cluster.security + "\n")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def make_private(home: Path) -> None:
    """The cluster's folder and its nodes' are the owner's only (0700): data, logs and secrets live below."""
    for folder in (home, home / "nodes"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
