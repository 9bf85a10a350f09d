"""`alertdist kafka install|start|stop|status`: the local Apache Kafka cluster (`--public`: the public one of the
two-tier mode; `--two-tier`: both)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from alertdist.infra import jmx_exporter, kafka_local
from alertdist.settings import Settings

SECURITY_HELP = """\
security (opt-in; the default embedded broker stays PLAINTEXT only, with no ACLs):
  --secure            add a SASL_PLAINTEXT SCRAM-SHA-512 listener on --secure-port and enforce ACLs
  --tls               the same listener over TLS (SASL_SSL); certificates come from infra/make_certs.sh
                      into <data-dir>/certs, clients trust <data-dir>/certs/ca.pem
A secured cluster remembers it: later `start`s keep its mode, and starting it open is refused.
The PLAINTEXT listener stays on 127.0.0.1 for the system's own services; its principal (User:ANONYMOUS)
is a super user, so in production it must be reachable from loopback or a private network only.
Add consumers with `alertdist users add NAME --role ROLE`.

  --secure-only       the local secure deployment: 3 nodes in <data-dir>/secure on --port + 300, with no
                      PLAINTEXT listener at all (clients and brokers: SCRAM-SHA-512 over TLS; controllers:
                      SASL/PLAIN over TLS); its super user is admin, password in <data-dir>/secure/secrets/
                      (`alertdist night --secure` starts and uses it); with --two-tier a secured pair, the
                      public one on $ALERTDIST_PUBLIC_KAFKA_PORT + 300 with its own CA, admin and users
"""


#: The local secure deployment listens this far above ALERTDIST_KAFKA_PORT (the two-tier public cluster: 9292).
SECURE_PORT_OFFSET = 300


def secure_cluster(settings: Settings, *, public: bool = False) -> kafka_local.KafkaCluster:
    """The local secure deployment: 3 nodes, no PLAINTEXT listener, beside (not instead of) the open clusters; with
    ``public``, the public cluster of a secured two-tier pair (its own ports, data, CA and users)."""
    port = (settings.public_kafka_port if public else settings.kafka_port) + SECURE_PORT_OFFSET
    home = settings.home / "kafka-public" if public else settings.kafka_home
    return kafka_local.KafkaCluster(
        home=home / "secure", brokers=3, port=port, controller_port=port + 10000, security="secure_only"
    )


def local_cluster(
    settings: Settings, args: argparse.Namespace | None = None, *, public: bool = False
) -> kafka_local.KafkaCluster:
    """The local cluster the settings describe (the producing one, or the public one of the two-tier mode: its own
    ports, data folder and cluster id), with any --port/--brokers/--data-dir/--secure from the command line."""
    port = settings.public_kafka_port if public else settings.kafka_port
    cluster = kafka_local.KafkaCluster(
        home=settings.home / "kafka-public" if public else settings.kafka_home,  # the jars stay in kafka_home
        brokers=settings.kafka_brokers,
        port=port,
        controller_port=port + 10000,
        jmx_port=jmx_port(settings.kafka_jmx_port, port),
    )
    if getattr(args, "secure_only", False):
        return secure_cluster(settings, public=public)
    if args is None:
        return cluster
    if getattr(args, "brokers", None):
        cluster = replace(cluster, brokers=args.brokers)
    if getattr(args, "port", None):
        cluster = replace(cluster, port=args.port, controller_port=args.port + 10000)
    if getattr(args, "data_dir", None):
        # the jars stay in the shared cache; only the nodes' data moves
        cluster = replace(cluster, home=Path(args.data_dir))
    if getattr(args, "secure_port", None):
        cluster = replace(cluster, secure_port=args.secure_port)
    wanted = "sasl_ssl" if getattr(args, "tls", False) else "sasl" if getattr(args, "secure", False) else None
    return replace(cluster, security=wanted or kafka_local.recorded_security(cluster) or "none")


def with_libs(cluster: kafka_local.KafkaCluster, settings: Settings) -> kafka_local.KafkaCluster:
    libs = settings.kafka_home / "libs"
    if cluster.libs_dir != libs:
        cluster.home.mkdir(parents=True, exist_ok=True)
        if not cluster.libs_dir.exists():
            cluster.libs_dir.symlink_to(libs, target_is_directory=True)
    return cluster


def _clusters(args, settings) -> list[tuple[str, kafka_local.KafkaCluster]]:
    """The clusters a command acts on: producing (default), public (--public) or both (--two-tier)."""
    if getattr(args, "two_tier", False):
        only = args if getattr(args, "secure_only", False) else None  # a secured pair, or the open ones
        return [("producing", local_cluster(settings, only)), ("public", local_cluster(settings, only, public=True))]
    public = getattr(args, "public", False)
    return [("public" if public else "producing", local_cluster(settings, args, public=public))]


def _install(args, settings):
    kafka_local.install(settings.kafka_home / "libs")


def _start(args, settings):
    kafka_local.install(settings.kafka_home / "libs")
    clusters = _clusters(args, settings)
    for name, cluster in clusters:
        kafka_local.start(with_libs(cluster, settings))
        announce_jmx(settings, name, cluster)
        print(f"{name}: {cluster.bootstrap_servers}" if len(clusters) > 1 else cluster.bootstrap_servers)
        if cluster.secured:
            tls = f"; clients trust {cluster.ca_location}" if cluster.ca_location else ""
            print(f"SCRAM-SHA-512 ({cluster.security}) listener: {cluster.secure_bootstrap_servers}{tls}")


def jmx_port(setting: int, client_port: int) -> int | None:
    """Node 1's JMX exporter port: the setting, or 50 above the client port when it is 0 (each cluster its own);
    None when it is -1."""
    if setting < 0:
        return None
    return setting or client_port + 50


def announce_jmx(settings: Settings, name: str, cluster: kafka_local.KafkaCluster) -> None:
    """Tell the project's Prometheus where each node's JMX exporter listens (nothing without one)."""
    for node_id in cluster.node_ids() if cluster.jmx_port is not None else ():
        labels = {"job": "kafka", "cluster": name, "node": str(node_id)}
        port = cluster.jmx_port + node_id - 1
        jmx_exporter.announce(settings.prometheus_home / "jmx-targets", f"{name}-{node_id}", port, labels)


def _stop(args, settings):
    for _, cluster in _clusters(args, settings):
        kafka_local.stop(cluster)


def _status(args, settings):
    version = kafka_local.installed_version(settings.kafka_home / "libs")
    print(f"Kafka {version or 'not installed'} ({settings.kafka_home / 'libs'})")
    nodes = []
    for name, cluster in _clusters(args, settings):
        print(f"{name} cluster ({cluster.home}), security {cluster.security}")
        statuses = kafka_local.status(cluster)
        nodes += statuses
        for node in statuses:
            print(f"  {node}")
    return 0 if all(n.answering for n in nodes) else 3


def register(sub: argparse._SubParsersAction) -> None:
    kafka = sub.add_parser("kafka", help="install, start, stop or check the local Apache Kafka (KRaft) cluster")
    actions = kafka.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, func, help_: str, **kwargs) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_, description=help_, **kwargs)
        p.set_defaults(run=func)
        return p

    add("install", _install, "fetch the Kafka jars from Maven Central (no-op when already there)")
    for name, func, help_ in [
        ("start", _start, "start the local cluster (reuses running nodes) and wait until it answers"),
        ("stop", _stop, "stop the nodes this project started"),
        ("status", _status, "show each node's pid and whether it answers (exit 3 if any does not)"),
    ]:
        extra = (
            {"epilog": SECURITY_HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}
            if name == "start"
            else {}
        )
        p = add(name, func, help_, **extra)
        p.add_argument(
            "--brokers",
            type=int,
            help="number of nodes (default 1, or $ALERTDIST_KAFKA_BROKERS); "
            "3 gives night topics replication 3 and min.insync.replicas 2",
        )
        p.add_argument("--port", type=int, help="client port of node 1; node i uses PORT+i-1 (default 9092)")
        p.add_argument("--data-dir", help="folder for the nodes' data and logs (default .alertdist/kafka)")
        tier = p.add_mutually_exclusive_group()
        tier.add_argument(
            "--public",
            action="store_true",
            help="the public cluster of the two-tier mode (port $ALERTDIST_PUBLIC_KAFKA_PORT, default 9292; "
            "data in .alertdist/kafka-public)",
        )
        tier.add_argument(
            "--two-tier", action="store_true", help="both clusters, producing and public, with their own settings"
        )
        p.add_argument("--secure-only", action="store_true", help="the local secure deployment (see below)")
        p.add_argument(
            "--secure-port",
            type=int,
            metavar="PORT",
            help="SCRAM listener port of node 1; node i uses PORT+i-1 (default --port + 100)",
        )
        if name == "start":
            p.add_argument(
                "--secure",
                action="store_true",
                help="add a SCRAM-SHA-512 (SASL_PLAINTEXT) listener and enforce ACLs (see below)",
            )
            p.add_argument("--tls", action="store_true", help="like --secure, over TLS (SASL_SSL)")
