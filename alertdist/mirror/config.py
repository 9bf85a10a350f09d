"""MirrorMaker 2's dedicated-mode properties: what is mirrored, under which names, with which guarantees.

Topic names stay as they are (``IdentityReplicationPolicy``), so consumers of the public cluster use the same
names as the producing one. Only the programme topics and the nights topic are mirrored: a night's rejected
packets stay home. Exactly-once source support (KIP-618) is enabled: what MirrorMaker writes from each poll of
the source is a transaction committed with its source offsets, so a killed and restarted mirror neither loses
nor repeats an alert. It costs a transaction per poll and task (a commit marker in each partition it wrote, so
downstream offsets are no longer contiguous, and read_committed readers see a record only once its transaction
commits), part of the mirror's throughput on two cores (bench/README.md), and, in dedicated mode, the internal
Connect REST listener (KIP-710) through which the tasks' transactional producers are fenced.

On secured clusters (``MirrorSpec.source``/``target`` are `Brokers` carrying the mirror's SCRAM login) each side
gets its ``<alias>.security.protocol``, SASL and PEM truststore settings. The passwords are not in the properties
file: it names them through Kafka's ``FileConfigProvider`` (``${file:<secrets>:<alias>.password}``) and they sit
in a separate 0600 secrets file. Why a provider rather than a 0600 properties file: MirrorMaker stores each
connector's configuration in Connect's config topic on the public cluster, and a provider's placeholder is what
gets stored there, not the password (resolved only inside the worker); the properties file stays readable.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.kafka.clients import opened_secret
from alertdist.metrics.heartbeat import heartbeat_topic
from alertdist.nights.topics import MIRROR_SOURCE, MIRROR_TARGET, TopicNaming

__all__ = [
    "MirrorSpec",
    "mirror_properties",
    "mirror_secrets",
    "mirrored_topics",
    "write_properties",
]

#: MirrorMaker's and its Connect worker's own topics.
_INTERNAL_TOPICS = (
    "offset-syncs.topic",
    "heartbeats.topic",
    "checkpoints.topic",
    "offset.storage",
    "status.storage",
    "config.storage",
)


def mirrored_topics(naming: TopicNaming, night: dt.date | None = None) -> str:
    """The regular expression of the mirrored topics: the programme topics of ``night`` (None: of every night, for
    the long-running mirror) and the nights topic; never the rejected topic."""
    heartbeat = re.escape(heartbeat_topic(naming.survey))  # the monitor's heartbeat proves the mirror path alive
    return f"{naming.programme_topic_pattern(night)}|{re.escape(naming.nights_topic)}|{heartbeat}"


@dataclass(frozen=True)
class MirrorSpec:
    """One mirror: from ``source`` to ``target`` (bootstrap servers; a `Brokers` carrying the mirror's login on a
    secured cluster), the ``topics`` regex, the internal REST port, and the replication factor of the topics it
    creates (the target's size, up to 3); ``overrides`` are properties set last (tuning
    experiments: `bench/mirror.py --set`)."""

    source: str
    target: str
    topics: str
    rest_port: int
    replication: int = 1
    tasks: int = 2
    exactly_once: bool = True
    overrides: dict[str, str] = field(default_factory=dict)


def mirror_properties(spec: MirrorSpec, secrets: Path | None = None) -> dict[str, str]:
    """The properties file of ``connect-mirror-maker`` (dedicated mode) for ``spec``; ``secrets`` is where
    `process.start` writes (0600) the passwords of a secured spec (`mirror_secrets`)."""
    flow = f"{MIRROR_SOURCE}->{MIRROR_TARGET}"
    replicas = str(spec.replication)
    props = {
        "clusters": f"{MIRROR_SOURCE},{MIRROR_TARGET}",
        f"{MIRROR_SOURCE}.bootstrap.servers": spec.source,
        f"{MIRROR_TARGET}.bootstrap.servers": spec.target,
        f"{flow}.enabled": "true",
        f"{MIRROR_TARGET}->{MIRROR_SOURCE}.enabled": "false",
        f"{flow}.topics": spec.topics,
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "sync.topic.configs.enabled": "true",
        # Kafka 4.1.1's MirrorMaker logs "WARN Could not alter configuration of topic <t>." after every sync,
        # successful ones included (no exception follows; a real failure has one): KAFKA-20017, fixed in 4.3.0.
        "sync.topic.configs.interval.seconds": "10",
        "sync.topic.acls.enabled": "false",  # consumers' ACLs belong to the public cluster alone
        "refresh.topics.interval.seconds": "2",  # a night's topics, created at dusk, are mirrored within seconds
        "emit.checkpoints.enabled": "false",  # no consumer groups live upstream
        "emit.heartbeats.enabled": "false",
        "tasks.max": str(spec.tasks),
        "offset.flush.interval.ms": "1000",  # how soon the last offset syncs of a partition are written
        "offset.lag.max": "100",
        "replication.factor": replicas,
        **{f"{name}.replication.factor": replicas for name in _INTERNAL_TOPICS},
        f"{MIRROR_TARGET}.producer.max.request.size": str(11 * 1024 * 1024),  # the largest packets the topics take
        f"{MIRROR_TARGET}.producer.compression.type": "lz4",  # as the topics store them: no recompression
        f"{MIRROR_TARGET}.producer.linger.ms": "20",
        f"{MIRROR_TARGET}.producer.batch.size": str(1024 * 1024),  # the default 16 KB holds not one 80 KB alert
        f"{MIRROR_TARGET}.producer.buffer.memory": str(64 * 1024 * 1024),  # 14 partitions of 1 MB batches, per task
        f"{MIRROR_SOURCE}.consumer.max.partition.fetch.bytes": str(4 * 1024 * 1024),
        "dedicated.mode.enable.internal.rest": "true",
        "listeners": f"http://127.0.0.1:{spec.rest_port}",
    }
    if spec.exactly_once:
        props[f"{MIRROR_TARGET}.exactly.once.source.support"] = "enabled"  # a worker setting: per target cluster
        # A transaction per poll (Connect's default boundary). `<flow>.transaction.boundary=interval` (every 0.5 s)
        # was measured: more throughput, but a p99 of 2.5 s to a read_committed reader at 40,000 alerts/min.
    for alias, servers in ((MIRROR_SOURCE, spec.source), (MIRROR_TARGET, spec.target)):
        props.update(_login(alias, servers, secrets))
    if any(k.endswith(".sasl.jaas.config") for k in props):
        props.update({"config.providers": "file", "config.providers.file.class": _FILE_PROVIDER})
    return {**props, **spec.overrides}


_FILE_PROVIDER = "org.apache.kafka.common.config.provider.FileConfigProvider"


def _login(alias: str, servers: str, secrets: Path | None) -> dict[str, str]:
    """The Java client settings of the ``alias`` side from the librdkafka login ``servers`` carries (a `Brokers`),
    its password named through the file provider."""
    login = getattr(servers, "login", {})
    if not login:
        return {}
    if secrets is None:
        raise ValueError(f"the {alias} cluster needs a login: mirror_properties needs the secrets file's path")
    props = {
        f"{alias}.security.protocol": login["security.protocol"],
        f"{alias}.sasl.mechanism": login["sasl.mechanisms"],
        f"{alias}.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{login["sasl.username"]}" password="${{file:{secrets}:{alias}.password}}";',
    }
    if login.get("ssl.ca.location"):
        props[f"{alias}.ssl.truststore.type"] = "PEM"
        props[f"{alias}.ssl.truststore.location"] = str(login["ssl.ca.location"])
    return props


def mirror_secrets(spec: MirrorSpec) -> dict[str, str]:
    """The passwords `mirror_properties` names: ``<alias>.password`` of each side that logs in."""
    return {
        f"{alias}.password": opened_secret(servers.login["sasl.password"])
        for alias, servers in ((MIRROR_SOURCE, spec.source), (MIRROR_TARGET, spec.target))
        if getattr(servers, "login", {})
    }


def write_properties(path: Path, props: dict[str, str], *, mode: int = 0o644) -> None:
    """Write ``props`` as a Java properties file (backslashes escaped: the topics regex has them), created with
    ``mode`` before anything is written into it (0600 for the secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in props.items()]
    scratch = path.with_suffix(".partial")
    scratch.unlink(missing_ok=True)
    scratch.touch(mode=mode)
    scratch.chmod(mode)  # touch's mode passes through the umask
    scratch.write_text("\n".join(lines) + "\n")
    scratch.replace(path)
