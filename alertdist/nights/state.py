"""Whether a night is open or closed, and where its stream ends, kept in the compacted ``<survey>_nights`` topic.

The publisher writes ``open`` at dusk and, after its last packet is acknowledged, ``closed`` with the end
offset of every partition. Filters and the archiver stop when they have read up to those offsets: a night
ends when the system *knows* it ended, never after a guessed quiet period. A night whose publishing failed is
``aborted`` instead, with the offsets where its stream stopped: filters stop on it as on ``closed`` (it
`ended`), but it is not whole, so the archive refuses it unless asked for a partial archive.

Offsets are only true on the cluster that wrote them, so each record names its cluster (``cluster``). In the
two-tier mode MirrorMaker 2 copies the producing cluster's records to the public cluster, where they read as
``mirrored`` (not closed) until the public cluster's own closing record, with its own offsets, replaces them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import asdict, dataclass, field, replace

from alertdist.kafka.clients import admin_client, consumer
from alertdist.kafka.errors import KafkaOperationError
from alertdist.kafka.reading import watermarks
from alertdist.kafka.state_topic import KeyedStateTopic
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicNaming

__all__ = [
    "ABORTED",
    "CLOSED",
    "MIRRORED",
    "NightState",
    "NightStateError",
    "cluster_id",
    "end_offsets",
    "mark_night",
    "read_night_state",
]

OPEN = "open"
CLOSED = "closed"
ABORTED = "aborted"  # publishing failed: the stream ended where these offsets say, but the night is not whole
MIRRORED = "mirrored"  # a record copied from another cluster: its offsets do not hold here


class NightStateError(KafkaOperationError):
    """The nights topic could not be written or read. Mostly a request left unanswered, so transient unless
    raised otherwise (a refusal is raised with its Kafka error as the cause)."""

    def __init__(self, message: str, *, transient: bool = True):
        super().__init__(message, transient=transient)


@dataclass(frozen=True)
class NightState:
    """One night's state. ``end_offsets[topic][partition]`` is the offset *after* the night's last message.

    ``messages[topic][partition]``: how many messages lie before that offset, where transaction markers make
    it more than the count (a mirrored cluster); absent, the offsets are contiguous from 0."""

    night: str  # YYYYMMDD
    state: str  # "open" | "closed" | "aborted" | "mirrored" (read on a cluster other than the writer's)
    end_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    updated_at: str = ""
    cluster: str = ""  # the id of the cluster whose offsets these are
    messages: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        """Closed whole: every packet of the night was published."""
        return self.state == CLOSED

    @property
    def aborted(self) -> bool:
        return self.state == ABORTED

    @property
    def ended(self) -> bool:
        """Nothing more will come (closed or aborted): readers stop at ``end_offsets``."""
        return self.state in (CLOSED, ABORTED)

    @classmethod
    def from_dict(cls, body: dict) -> NightState:
        """From its JSON record, where partitions are text."""

        def keyed(offsets: dict) -> dict[str, dict[int, int]]:
            return {t: {int(p): o for p, o in parts.items()} for t, parts in offsets.items()}

        return cls(**{**body, "end_offsets": keyed(body["end_offsets"]), "messages": keyed(body.get("messages", {}))})

    def total_messages(self, topics=None) -> int:
        counts = {**self.end_offsets, **self.messages}
        return sum(sum(parts.values()) for t, parts in counts.items() if topics is None or t in topics)

    def messages_in(self, topic: str, partition: int, first_offset: int) -> int:
        """How many messages the night holds in ``topic[partition]`` from ``first_offset`` to its end."""
        if topic in self.messages:
            return self.messages[topic].get(partition, 0)
        return self.end_offsets.get(topic, {}).get(partition, 0) - first_offset


def end_offsets(bootstrap_servers: str, topics: list[str], *, timeout: float = 30.0) -> dict[str, dict[int, int]]:
    """The high watermark (next offset to be written) of every partition of ``topics``."""
    c = consumer(bootstrap_servers)
    try:
        metadata = c.list_topics(timeout=timeout)
        result: dict[str, dict[int, int]] = {}
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise NightStateError(f"topic {topic} does not exist; create the night's topics first")
            try:
                result[topic] = {
                    p: watermarks(c, topic, p, timeout=timeout)[1] for p in sorted(metadata.topics[topic].partitions)
                }
            except KafkaOperationError as e:
                raise NightStateError(str(e), transient=e.transient) from e
        return result
    finally:
        c.close()


def mark_night(bootstrap_servers: str, naming: TopicNaming, state: NightState, *, timeout: float = 30.0) -> NightState:
    """Write a night's state to the nights topic, naming this cluster, and wait until Kafka has acknowledged it;
    returns the state as written."""
    stamped = replace(
        state,
        updated_at=state.updated_at or dt.datetime.now(dt.UTC).isoformat(),
        cluster=state.cluster or cluster_id(bootstrap_servers, timeout=timeout),
    )
    try:
        KeyedStateTopic(bootstrap_servers, naming.nights_topic).put(state.night, asdict(stamped), timeout=timeout)
    except KafkaOperationError as e:
        raise NightStateError(
            f"marking night {state.night} {state.state} in {naming.nights_topic} failed: {e}", transient=e.transient
        ) from e
    return stamped


def read_night_state(
    bootstrap_servers: str, naming: TopicNaming, night: dt.date, *, timeout: float = 30.0
) -> NightState | None:
    """The latest state written for ``night``, or None if the night was never opened; a closing (or aborting)
    record written on another cluster (mirrored here) reads as ``mirrored``, never ``closed``: its offsets are not
    this cluster's."""
    try:
        latest = (
            KeyedStateTopic(bootstrap_servers, naming.nights_topic).latest(timeout=timeout).get(format_night(night))
        )
    except KafkaOperationError as e:
        raise NightStateError(str(e), transient=e.transient) from e
    if latest is None:
        return None
    state = NightState.from_dict(latest)
    if state.ended and state.cluster and state.cluster != cluster_id(bootstrap_servers, timeout=timeout):
        return replace(state, state=MIRRORED)
    return state


@functools.lru_cache(maxsize=16)
def cluster_id(bootstrap_servers: str, *, timeout: float = 30.0) -> str:
    """The id of the cluster at ``bootstrap_servers`` (KRaft's, fixed when its storage was formatted)."""
    admin = admin_client(bootstrap_servers)  # held until the answer is in: a collected client drops its requests
    try:
        return admin.describe_cluster(request_timeout=timeout).result().cluster_id
    except Exception as e:
        raise NightStateError(f"asking {bootstrap_servers} for its cluster id failed: {e}") from e


def known_nights(bootstrap_servers: str, naming: TopicNaming, *, timeout: float = 30.0) -> set[str]:
    """Every night (YYYYMMDD) ever opened on this cluster, open or closed."""
    try:
        return set(KeyedStateTopic(bootstrap_servers, naming.nights_topic).latest(timeout=timeout))
    except KafkaOperationError as e:
        raise NightStateError(str(e), transient=e.transient) from e
