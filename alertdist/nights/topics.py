"""A night's Kafka topics: their names, their settings, and creating them idempotently.

A night is named by a date (`alertdist.nights.dates`); each programme of that night has its topic
`<survey>_<YYYYMMDD>_programid<N>`, named here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from alertdist.kafka.clients import MAX_MESSAGE_BYTES
from alertdist.kafka.errors import KafkaOperationError, retry_until
from alertdist.nights.dates import format_night

__all__ = [
    "DEFAULT_PROGRAMMES",
    "MIRROR_SOURCE",
    "MIRROR_TARGET",
    "NAMESPACE_SEPARATOR",
    "MirrorNames",
    "TopicNaming",
    "TopicSettings",
    "TopicsError",
    "create_topics",
    "ensure_night_topics",
    "filter_login",
    "replication_for",
    "user_namespace",
]

#: ZTF's programmes: id -> the name used in archive file names.
DEFAULT_PROGRAMMES: dict[int, str] = {1: "public", 2: "partnership", 3: "caltech"}


#: MirrorMaker 2's aliases of the two clusters of the two-tier mode: its properties file names them, and its own
#: topics, Connect group and transactional ids are named after them (`MirrorNames`).
MIRROR_SOURCE, MIRROR_TARGET = "producing", "public"


@dataclass(frozen=True)
class MirrorNames:
    """What MirrorMaker 2 (dedicated mode) names after the aliases: the offset syncs on the producing cluster;
    Connect's offsets, configs and status topics, its group and its tasks' transactional ids on the public one."""

    offset_syncs_topic: str = f"mm2-offset-syncs.{MIRROR_TARGET}.internal"
    connect_topics: tuple[str, ...] = tuple(
        f"mm2-{t}.{MIRROR_SOURCE}.internal" for t in ("offsets", "configs", "status")
    )
    connect_group: str = f"{MIRROR_SOURCE}-mm2"  # also the prefix of its tasks' transactional ids
    leader_transactional_id: str = f"connect-cluster-{MIRROR_SOURCE}-mm2"  # the leader's, for the config topic


#: Ends a user's name at the start of its consumer group ids and transactional ids; user names cannot contain it,
#: so no user's namespace (a PREFIXED ACL on ``<name>.``) covers another's: ``ann.`` is not a prefix of ``anna.x``.
NAMESPACE_SEPARATOR = "."


def user_namespace(user: str) -> str:
    """The prefix of every consumer group and transactional id that ``user`` may use."""
    return f"{user}{NAMESPACE_SEPARATOR}"


def filter_login(filter_name: str) -> str:
    """The login (and default user name) of one filter's live runs."""
    return f"filter_{filter_name}"


class TopicsError(KafkaOperationError):
    """A topic could not be created or inspected."""


@dataclass(frozen=True)
class TopicNaming:
    """Topic names of one survey; the prefix and the programme list are configuration."""

    survey: str = "ztf"
    programmes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_PROGRAMMES))

    def programme_topic(self, night: dt.date, programid: int) -> str:
        if programid not in self.programmes:
            raise ValueError(f"programid {programid} is not one of {sorted(self.programmes)}")
        return f"{self.survey}_{format_night(night)}_programid{programid}"

    def programme_topics(self, night: dt.date, programmes=None) -> dict[int, str]:
        return {p: self.programme_topic(night, p) for p in (programmes or sorted(self.programmes))}

    def programme_topic_pattern(self, night: dt.date | None = None) -> str:
        """A regular expression matching exactly the programme topics of ``night`` (None: of every night), for
        tools that select topics by pattern (MirrorMaker 2)."""
        date = rf"{format_night(night)}" if night else r"\d{8}"
        ids = "|".join(str(p) for p in sorted(self.programmes))
        return f"{re.escape(self.survey)}_{date}_programid({ids})"

    def rejected_topic(self, night: dt.date) -> str:
        return f"{self.survey}_{format_night(night)}_rejected"

    @property
    def nights_topic(self) -> str:
        """The compacted topic where each night's state (open/closed, closing offsets) is kept."""
        return f"{self.survey}_nights"

    def filter_output_topic(self, source_topic: str, filter_name: str) -> str:
        return f"{source_topic}_{filter_name}"

    def filter_group(self, night: dt.date, filter_name: str) -> str:
        """A filter's consumer group for a night (scoped to the night so a backfill never rebalances tonight), in its
        login's namespace, where no other user's rights reach."""
        return f"{user_namespace(filter_login(filter_name))}{self.survey}_{format_night(night)}"

    def filter_errors_topic(self, night: dt.date, filter_name: str) -> str:
        return f"{self.survey}_{format_night(night)}_{filter_name}_errors"

    def programid_of(self, topic: str) -> int:
        """The programme of a programme topic (or of a filter output derived from one)."""
        marker = "_programid"
        if marker not in topic:
            raise ValueError(f"{topic!r} is not a programme topic of the form {self.survey}_YYYYMMDD_programidN")
        digits = topic.split(marker, 1)[1].split("_", 1)[0]
        return int(digits)


@dataclass(frozen=True)
class TopicSettings:
    """Per-topic settings; defaults follow ZTF (14 partitions) with room for the largest real alerts."""

    partitions: int = 14
    replication_factor: int | None = None  # None: the cluster size, up to 3
    retention_ms: int = 7 * 24 * 3600 * 1000
    max_message_bytes: int = MAX_MESSAGE_BYTES
    compression: str = "lz4"
    min_insync_replicas: int | None = None  # None: 2 when replicated, else 1

    def configs(self, replication_factor: int) -> dict[str, str]:
        min_isr = self.min_insync_replicas or (2 if replication_factor >= 3 else 1)
        return {
            "retention.ms": str(self.retention_ms),
            "max.message.bytes": str(self.max_message_bytes),
            "compression.type": self.compression,
            "min.insync.replicas": str(min_isr),
        }


def replication_for(admin: AdminClient, wanted: int | None) -> int:
    """The replication factor for new topics: ``wanted`` (None: 3), but never more than the brokers there are."""
    brokers = len(admin.list_topics(timeout=10).brokers)
    if brokers == 0:
        raise TopicsError(
            "the Kafka cluster reports no brokers; is it running? (`alertdist kafka status`)", transient=True
        )
    return min(wanted or 3, brokers)


def create_topics(
    admin: AdminClient, specs: dict[str, tuple[int, int, dict[str, str]]], *, timeout: float = 30.0
) -> dict[str, str]:
    """Create each topic ``name -> (partitions, replication, configs)`` that does not exist yet.

    Returns ``name -> "created" | "exists" | "exists; drift: ..."``: an existing topic is never an error,
    but settings that differ from the wanted ones are reported so an operator can see them.
    """
    existing = admin.list_topics(timeout=timeout).topics
    outcome: dict[str, str] = {}
    new = [
        NewTopic(n, num_partitions=p, replication_factor=r, config=c)
        for n, (p, r, c) in specs.items()
        if n not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise TopicsError(f"creating topic {name} failed: {e.args[0].str()}") from e
                outcome[name] = "exists"  # someone else created it in between
    for name in specs:
        if name not in outcome:
            outcome[name] = _drift(admin, name, specs[name], existing[name], timeout)
    created = [n for n, o in outcome.items() if o == "created"]
    if created:  # callers use a new topic at once: wait until every partition has a leader
        retry_until("waiting for new topics", _all_led, admin, created, timeout, timeout_s=timeout, delay_s=0.1)
    return outcome


def _all_led(admin: AdminClient, names: list[str], timeout: float) -> None:
    topics = admin.list_topics(timeout=timeout).topics
    pending = [
        n
        for n in names
        if n not in topics or topics[n].error is not None or any(p.leader < 0 for p in topics[n].partitions.values())
    ]
    if pending:
        raise TopicsError(f"topics created but not ready after {timeout:.0f} s: {', '.join(pending)}", transient=True)


def _drift(admin, name, spec, metadata, timeout) -> str:
    partitions, replication, configs = spec
    differences = []
    if len(metadata.partitions) != partitions:
        differences.append(f"partitions {len(metadata.partitions)} != {partitions}")
    actual_rf = len(next(iter(metadata.partitions.values())).replicas) if metadata.partitions else 0
    if actual_rf != replication:
        differences.append(f"replication {actual_rf} != {replication}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    described = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    for key, wanted in configs.items():
        if key in described and described[key].value != wanted:
            differences.append(f"{key} {described[key].value} != {wanted}")
    return "exists" if not differences else "exists; drift: " + ", ".join(differences)


def ensure_night_topics(
    admin: AdminClient,
    naming: TopicNaming,
    night: dt.date,
    settings: TopicSettings = TopicSettings(),
    programmes=None,
) -> dict[str, str]:
    """Create a night's programme topics, its rejected-packets topic and the shared nights topic."""
    replication = replication_for(admin, settings.replication_factor)
    configs = settings.configs(replication)
    specs = dict.fromkeys(
        naming.programme_topics(night, programmes).values(), (settings.partitions, replication, configs)
    )
    specs[naming.rejected_topic(night)] = (1, replication, configs)
    nights_configs = {"cleanup.policy": "compact", "min.insync.replicas": configs["min.insync.replicas"]}
    specs[naming.nights_topic] = (1, replication, nights_configs)
    return create_topics(admin, specs)
