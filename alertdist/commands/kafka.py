"""`alertdist kafka install|start|stop|status`: the local Apache Kafka cluster."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from alertdist.settings import Settings
from infra import kafka_local


def local_cluster(settings: Settings, args: argparse.Namespace | None = None) -> kafka_local.KafkaCluster:
    """The local cluster the settings describe, with any --port/--brokers/--data-dir from the command line."""
    cluster = kafka_local.KafkaCluster(
        home=settings.kafka_home, brokers=settings.kafka_brokers, port=settings.kafka_port,
        controller_port=settings.kafka_port + 10000,
    )
    if args is not None:
        if getattr(args, "brokers", None):
            cluster = replace(cluster, brokers=args.brokers)
        if getattr(args, "port", None):
            cluster = replace(cluster, port=args.port, controller_port=args.port + 10000)
        if getattr(args, "data_dir", None):
            # the jars stay in the shared cache; only the nodes' data moves
            cluster = replace(cluster, home=Path(args.data_dir))
    return cluster


def _with_libs(cluster: kafka_local.KafkaCluster, settings: Settings) -> kafka_local.KafkaCluster:
    libs = settings.kafka_home / "libs"
    if cluster.libs_dir != libs:
        cluster.home.mkdir(parents=True, exist_ok=True)
        if not cluster.libs_dir.exists():
            cluster.libs_dir.symlink_to(libs, target_is_directory=True)
    return cluster


def _install(args, settings):
    kafka_local.install(settings.kafka_home / "libs")


def _start(args, settings):
    kafka_local.install(settings.kafka_home / "libs")
    cluster = _with_libs(local_cluster(settings, args), settings)
    kafka_local.start(cluster)
    print(cluster.bootstrap_servers)


def _stop(args, settings):
    kafka_local.stop(local_cluster(settings, args))


def _status(args, settings):
    cluster = local_cluster(settings, args)
    version = kafka_local.installed_version(settings.kafka_home / "libs")
    print(f"Kafka {version or 'not installed'} ({settings.kafka_home / 'libs'})")
    nodes = kafka_local.status(cluster)
    for node in nodes:
        print(node)
    return 0 if all(n.answering for n in nodes) else 3


def register(sub: argparse._SubParsersAction) -> None:
    kafka = sub.add_parser("kafka", help="install, start, stop or check the local Apache Kafka (KRaft) cluster")
    actions = kafka.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_)
        p.set_defaults(run=func)
        return p

    add("install", _install, "fetch the Kafka jars from Maven Central (no-op when already there)")
    for name, func, help_ in [
        ("start", _start, "start the local cluster (reuses running nodes) and wait until it answers"),
        ("stop", _stop, "stop the nodes this project started"),
        ("status", _status, "show each node's pid and whether it answers (exit 3 if any does not)"),
    ]:
        p = add(name, func, help_)
        p.add_argument("--brokers", type=int, help="number of nodes (default 1, or $ALERTDIST_KAFKA_BROKERS)")
        p.add_argument("--port", type=int, help="client port of node 1; node i uses PORT+i-1 (default 9092)")
        p.add_argument("--data-dir", help="folder for the nodes' data and logs (default .alertdist/kafka)")
