"""MirrorMaker 2's dedicated-mode properties: what is mirrored, under which names, with which guarantees.

Topic names stay as they are (``IdentityReplicationPolicy``), so consumers of the public cluster use the same
names as the producing one. Only the programme topics and the nights topic are mirrored: a night's rejected
packets stay home. Exactly-once source support (KIP-618) is enabled: what MirrorMaker writes in each half second
is a transaction committed with its source offsets, so a killed and restarted mirror neither loses nor repeats
an alert. It costs a transaction every 0.5 s per task (a commit marker in each partition it wrote, so downstream
offsets are no longer contiguous, and read_committed readers see a record only once its transaction commits: up
to 0.5 s later), about 40 % of the mirror's throughput on two cores (bench/README.md), and, in dedicated mode,
the internal Connect REST listener (KIP-710) through which the tasks' transactional producers are fenced.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.nights.topics import TopicNaming

__all__ = [
    "SOURCE",
    "TARGET",
    "MirrorSpec",
    "mirror_properties",
    "mirrored_topics",
    "offset_syncs_topic",
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

#: The clusters' aliases in the properties file (and in MirrorMaker's internal topic names).
SOURCE, TARGET = "producing", "public"


def mirrored_topics(naming: TopicNaming, night: dt.date | None = None) -> str:
    """The regular expression of the mirrored topics: the programme topics of ``night`` (None: of every night, for
    the long-running mirror) and the nights topic; never the rejected topic."""
    return f"{naming.programme_topic_pattern(night)}|{re.escape(naming.nights_topic)}"


def offset_syncs_topic() -> str:
    """Where MirrorMaker records upstream -> downstream offsets (on the source cluster, its default)."""
    return f"mm2-offset-syncs.{TARGET}.internal"


@dataclass(frozen=True)
class MirrorSpec:
    """One mirror: from ``source`` to ``target`` (bootstrap servers), the ``topics`` regex, the internal REST
    port, and the replication factor of the topics it creates (the target's size, up to 3); ``overrides`` are
    properties set last (tuning experiments: `bench/mirror.py --set`)."""

    source: str
    target: str
    topics: str
    rest_port: int
    replication: int = 1
    tasks: int = 2
    exactly_once: bool = True
    overrides: dict[str, str] = field(default_factory=dict)


def mirror_properties(spec: MirrorSpec) -> dict[str, str]:
    """The properties file of ``connect-mirror-maker`` (dedicated mode) for ``spec``."""
    flow = f"{SOURCE}->{TARGET}"
    replicas = str(spec.replication)
    props = {
        "clusters": f"{SOURCE},{TARGET}",
        f"{SOURCE}.bootstrap.servers": spec.source,
        f"{TARGET}.bootstrap.servers": spec.target,
        f"{flow}.enabled": "true",
        f"{TARGET}->{SOURCE}.enabled": "false",
        f"{flow}.topics": spec.topics,
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "sync.topic.configs.enabled": "true",
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
        f"{TARGET}.producer.max.request.size": str(11 * 1024 * 1024),  # the largest packets the topics take
        f"{TARGET}.producer.compression.type": "lz4",  # as the topics store them: no recompression
        f"{TARGET}.producer.linger.ms": "20",
        f"{TARGET}.producer.batch.size": str(1024 * 1024),  # the default 16 KB holds not one 80 KB alert
        f"{TARGET}.producer.buffer.memory": str(64 * 1024 * 1024),  # 14 partitions of 1 MB batches, per task
        f"{SOURCE}.consumer.max.partition.fetch.bytes": str(4 * 1024 * 1024),
        "dedicated.mode.enable.internal.rest": "true",
        "listeners": f"http://127.0.0.1:{spec.rest_port}",
    }
    if spec.exactly_once:
        props[f"{TARGET}.exactly.once.source.support"] = "enabled"  # a worker setting: per target cluster
        # a transaction every half second rather than one per poll of up to 500 records (~40 MB)
        props[f"{flow}.transaction.boundary"] = "interval"  # a connector setting: per replication flow
        props[f"{flow}.transaction.boundary.interval.ms"] = "500"
    return {**props, **spec.overrides}


def write_properties(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` as a Java properties file (backslashes escaped: the topics regex has them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}={v.replace(chr(92), chr(92) * 2)}" for k, v in props.items()]
    path.write_text("\n".join(lines) + "\n")
