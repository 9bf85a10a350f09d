"""Read a closed night's programme topic, then hand its alerts out in candid order, each candid once.

Why a spool: Kafka's order across partitions differs between runs and between a topic and its replay, yet the
archive must be byte-identical whenever the alerts are the same. So the topic is first copied to a local spool
file (sequential writes, nothing kept in memory) with a 48-byte index entry per message: candid, where it came
from, where it sits in the spool. The index is sorted in bounded runs that go to disk and are merged lazily
(an external merge sort): memory stays at one run (`run_size` entries, 4.8 MB by default) however long the
night. Duplicates (same candid) are adjacent in that order and are dropped there, at no memory cost; the copy
kept is the first one published (lowest partition, then offset), and a duplicate whose bytes differ from the
kept copy is reported, not silently merged. The spool needs local disk for one programme's night of packets.

Nothing is dropped silently: the bytes of every message set aside (a reject, a duplicate whose bytes differ)
go to a second file beside the spool (`Spool.set_aside`), with where it came from and why, for the archive to
keep next to the night's files.

Reading uses assigned partitions from each one's earliest offset to the closing offset the publisher recorded,
so it never depends on a consumer group's committed offsets, and it stops when it has reached those offsets.
"""

from __future__ import annotations

import heapq
import json
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from confluent_kafka import KafkaError, TopicPartition
from isal import isal_zlib

from alertdist.avro.codec import AlertPacketError, peek
from alertdist.avro.container import parse_container, parse_header, read_length, read_long
from alertdist.avro.plausible import alert_problem
from alertdist.kafka.clients import consumer
from alertdist.kafka.errors import KafkaOperationError
from alertdist.nights.dates import jd_to_unix

__all__ = [
    "CANDID",
    "INDEX_DTYPE",
    "MTIME",
    "OFFSET",
    "PARTITION",
    "SCHEMA",
    "ArchiveInterrupted",
    "ArchiveStreamError",
    "PartitionRead",
    "RejectedMessage",
    "SetAside",
    "Spool",
    "TopicRead",
    "spool_topic",
]

INDEX_DTYPE = np.dtype(
    [
        ("candid", "<i8"),
        ("partition", "<i4"),
        ("offset", "<i8"),
        ("pos", "<i8"),
        ("size", "<i4"),
        ("mtime", "<i8"),
        ("crc", "<u4"),
        ("schema", "<i4"),
    ]
)
#: Where each field sits in an index entry, a plain tuple (``tolist()`` makes those 10x faster than records)
CANDID, PARTITION, OFFSET, POS, SIZE, MTIME, CRC, SCHEMA = map(
    INDEX_DTYPE.names.index, ("candid", "partition", "offset", "pos", "size", "mtime", "crc", "schema")
)
_MERGE_BLOCK = 8192
_PROGRESS_EVERY = 500
_DOUBLE = struct.Struct("<d")
_CONSUME_BATCH = 64  # messages per consume() call: fewer calls into librdkafka, ~5 MB of packets at most
# Prefetch: at most 16 MB queued and 16 MB per fetch, so memory does not depend on the night. librdkafka waits
# fetch.queue.backoff.ms (default 1 s) before fetching again once its queue was full: with 80 KB messages the
# queue fills at every fetch, and that second cost 5x in read rate (1,000 instead of 5,000-8,000 msgs/s).
_PREFETCH = {
    "queued.max.messages.kbytes": 16384,
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.partition.fetch.bytes": 2 * 1024 * 1024,
    "fetch.queue.backoff.ms": 10,
}


class ArchiveStreamError(KafkaOperationError):
    """The night's topic could not be read up to its closing offsets."""


class ArchiveInterrupted(RuntimeError):
    """A stop was requested (SIGTERM/SIGINT) before the night was read; nothing was published."""


@dataclass(frozen=True)
class RejectedMessage:
    """A message of a programme topic that is not a valid alert packet: set aside, not archived."""

    partition: int
    offset: int
    size: int
    reason: str


@dataclass(frozen=True)
class SetAside:
    """A message kept apart from the archive (its bytes at ``pos`` in the spool's set-aside file)."""

    partition: int
    offset: int
    pos: int
    size: int
    reason: str


@dataclass
class PartitionRead:
    first_offset: int  # the earliest offset still in Kafka when reading started
    end_offset: int  # the closing offset: one past the night's last message
    read: int = 0


@dataclass
class TopicRead:
    topic: str
    partitions: dict[int, PartitionRead] = field(default_factory=dict)
    rejected: list[RejectedMessage] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(p.read for p in self.partitions.values())


@dataclass
class Duplicates:
    dropped: int = 0
    conflicting: list[dict] = field(default_factory=list)  # same candid, different bytes (first 100)
    conflicting_count: int = 0


@dataclass(frozen=True)
class _KnownHeader:
    header: bytes  # the packet's header as written: magic, metadata (writer schema), up to the sync marker
    id: int
    plain_prefix: bool  # the record starts schemavsn, publisher, objectId (strings), candid (long), candidate.jd


def _has_plain_prefix(header: bytes) -> bool:
    """Whether records of this header's writer schema start as every ZTF version's do, so `_read_prefix` can read
    them."""
    try:
        fields = json.loads(header[slice(*parse_header(header))])["fields"]
        expected = [("schemavsn", "string"), ("publisher", "string"), ("objectId", "string"), ("candid", "long")]
        candidate = fields[4]["type"]
        return (
            [(f["name"], f["type"]) for f in fields[:4]] == expected
            and fields[4]["name"] == "candidate"
            and candidate["type"] == "record"
            and (candidate["fields"][0]["name"], candidate["fields"][0]["type"]) == ("jd", "double")
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _read_prefix(packet: bytes, pos: int, end: int) -> tuple[str, int, float]:
    """(schemavsn, candid, candidate.jd) from the first fields of a record (the sort key and member mtime)."""
    values = []
    for what in ("schemavsn length", "publisher length", "objectId length"):
        length, pos = read_length(packet, pos, what, end)
        values.append(packet[pos : pos + length])
        pos += length
    candid, pos = read_long(packet, pos, "candid")
    if end - pos < 8:
        raise AlertPacketError(f"the record ends at byte {end}, inside candidate.jd")
    try:
        schemavsn = values[0].decode("utf-8")
    except UnicodeDecodeError as e:
        raise AlertPacketError(f"schemavsn is not UTF-8: {values[0][:20]!r}") from e
    return schemavsn, candid, _DOUBLE.unpack_from(packet, pos)[0]


class Spool:
    """Packets appended to one local file, and their index sorted by (candid, partition, offset) on disk."""

    def __init__(self, folder: Path, *, run_size: int = 100_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "packets.spool"
        self._out = open(self.path, "wb", buffering=0)  # one copy per packet, into the page cache
        self._run = np.empty(run_size, dtype=INDEX_DTYPE)
        self._filled = 0
        self._runs: list[Path] = []
        self._position = 0
        self.headers: dict[bytes, int] = {}  # packet header as written -> id used in the index
        self._known: list[_KnownHeader] = []
        self.versions: Counter[str] = Counter()  # schemavsn -> packets read (duplicates included)
        self.count = 0
        self._reader = None
        self.aside: list[SetAside] = []  # messages set aside, in the order met
        self._aside_path = self.folder / "set-aside.spool"
        self._aside_out = None
        self._aside_size = 0

    def add(self, packet: bytes, partition: int, offset: int) -> None:
        """Check the framing, read the sort key and append one packet; raises AlertPacketError (nothing appended)
        if it is malformed. The record itself is checked whole when it is decoded for Parquet (see night)."""
        container = parse_container(packet)
        schema = self._header_of(packet, container.header_end)
        if schema is None or not schema.plain_prefix:
            info = peek(packet)  # a new or unusual writer schema: the codec checks it
            schemavsn, candid, jd = info.schemavsn, info.candid, info.jd
            if schema is None:
                schema = self._register(packet[: container.header_end])
        else:
            schemavsn, candid, jd = _read_prefix(packet, container.body_start, container.body_end)
        problem = alert_problem(candid=candid, jd=jd)  # what names and dates a tar member: checked before use
        if problem is not None:
            raise AlertPacketError(problem)
        if self._filled == len(self._run):
            self._spill()
        self._run[self._filled] = (
            candid,
            partition,
            offset,
            self._position,
            len(packet),
            jd_to_unix(jd),
            isal_zlib.crc32(packet),
            schema.id,
        )
        self._filled += 1
        self._out.write(packet)
        self._position += len(packet)
        self.versions[schemavsn] += 1
        self.count += 1

    def set_aside(self, packet: bytes, partition: int, offset: int, reason: str) -> None:
        """Keep the bytes of a message that is not archived (a reject, a conflicting duplicate) and why."""
        if self._aside_out is None:
            self._aside_out = open(self._aside_path, "w+b", buffering=0)
        self._aside_out.write(packet)
        self.aside.append(SetAside(partition, offset, self._aside_size, len(packet), reason))
        self._aside_size += len(packet)

    def read_aside(self, entry: SetAside) -> bytes:
        """The bytes of a message set aside (unbuffered writes: what was written is there to read)."""
        return os.pread(self._aside_out.fileno(), entry.size, entry.pos)

    def _header_of(self, packet: bytes, end: int) -> _KnownHeader | None:
        for known in self._known:  # one or a few per night: compare in place, no copy, no hashing
            if len(known.header) == end and packet.startswith(known.header):
                return known
        return None

    def _register(self, header: bytes) -> _KnownHeader:
        known = _KnownHeader(header, len(self._known), _has_plain_prefix(header))
        self._known.append(known)
        self.headers[header] = known.id
        return known

    def forget(self, packet: bytes) -> None:
        """Take back the count of a packet that turned out malformed when decoded (it is rejected, not kept)."""
        container = parse_container(packet)
        schema = self._header_of(packet, container.header_end)
        if schema is not None and schema.plain_prefix:
            schemavsn = _read_prefix(packet, container.body_start, container.body_end)[0]
        else:
            schemavsn = peek(packet).schemavsn
        self.versions[schemavsn] -= 1
        if not self.versions[schemavsn]:
            del self.versions[schemavsn]

    def _spill(self) -> None:
        run = np.sort(self._run[: self._filled], order=["candid", "partition", "offset"])
        path = self.folder / f"index-{len(self._runs):05d}.npy"
        np.save(path, run)
        self._runs.append(path)
        self._filled = 0

    def finish(self) -> None:
        """Stop appending: flush the spool and sort the last run."""
        self._out.close()
        if self._runs:
            self._spill()
        else:
            self._run = np.sort(self._run[: self._filled], order=["candid", "partition", "offset"])

    def _sorted_entries(self) -> Iterator[tuple]:
        if not self._runs:
            for start in range(0, len(self._run), _MERGE_BLOCK):  # tolist: tuples of ints, 10x faster than tuple(e)
                yield from self._run[start : start + _MERGE_BLOCK].tolist()
            return
        yield from heapq.merge(*(_iterate_run(path) for path in self._runs))

    def unique(self, duplicates: Duplicates) -> Iterator[tuple]:
        """Index entries in (candid, partition, offset) order, the first of each candid; counts the others."""
        kept = None
        for entry in self._sorted_entries():
            if kept is not None and entry[CANDID] == kept[CANDID]:
                duplicates.dropped += 1
                if entry[CRC] != kept[CRC] or entry[SIZE] != kept[SIZE] or self.read(entry) != self.read(kept):
                    duplicates.conflicting_count += 1
                    self.set_aside(
                        self.read(entry),
                        int(entry[PARTITION]),
                        int(entry[OFFSET]),
                        f"duplicate of candid {int(entry[CANDID])} with different bytes; the copy archived is "
                        f"partition {int(kept[PARTITION])} offset {int(kept[OFFSET])}",
                    )
                    if len(duplicates.conflicting) < 100:
                        duplicates.conflicting.append(
                            {
                                "candid": int(entry[CANDID]),
                                "kept": [int(kept[PARTITION]), int(kept[OFFSET])],
                                "dropped": [int(entry[PARTITION]), int(entry[OFFSET])],
                            }
                        )
                continue
            kept = entry
            yield entry

    def read(self, entry) -> bytes:
        if self._reader is None:
            self._reader = open(self.path, "rb")
        return os.pread(self._reader.fileno(), int(entry[SIZE]), int(entry[POS]))

    def close(self) -> None:
        self._out.close()
        if self._reader is not None:
            self._reader.close()
        if self._aside_out is not None:
            self._aside_out.close()


def _iterate_run(path: Path) -> Iterator[tuple]:
    run = np.load(path, mmap_mode="r")
    for start in range(0, len(run), _MERGE_BLOCK):
        yield from run[start : start + _MERGE_BLOCK].tolist()


def spool_topic(
    bootstrap_servers: str,
    topic: str,
    end_offsets: dict[int, int],
    spool: Spool,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    poll_timeout: float = 0.05,
    stall_timeout: float = 120.0,
) -> TopicRead:
    """Copy every partition of ``topic`` from its earliest offset to its closing offset into ``spool``.

    Malformed packets are set aside in the result (`rejected`) with their reason. Raises ArchiveStreamError if
    a partition ends before its closing offset (the topic was truncated or re-created) or nothing arrives for
    ``stall_timeout`` seconds while data is still due; ArchiveInterrupted if ``stop`` is set.
    """
    result = TopicRead(topic)
    c = consumer(bootstrap_servers, group_id=f"alertdist-archive-{topic}", **_PREFETCH)
    try:
        remaining = _assign(c, topic, end_offsets, result)
        last_arrival = time.monotonic()
        while remaining:
            if stop is not None and stop.is_set():
                raise ArchiveInterrupted(f"stopped while reading {topic}; {result.read} messages read")
            # consume() waits for a whole batch or the timeout: a short one, or the tail of every topic (under a
            # batch) would wait it out in full
            messages = c.consume(_CONSUME_BATCH, poll_timeout)
            if not messages:
                if time.monotonic() - last_arrival > stall_timeout:
                    raise ArchiveStreamError(
                        f"nothing arrived from {topic} for {stall_timeout:.0f} s with partitions "
                        f"{sorted(remaining)} not yet at their closing offsets; is the cluster healthy?",
                        transient=True,
                    )
                continue
            last_arrival = time.monotonic()
            _take_messages(messages, end_offsets, remaining, spool, result, progress)
        if progress is not None:
            progress(result.read)
        return result
    finally:
        c.close()


def _assign(c, topic: str, end_offsets: dict[int, int], result: TopicRead) -> set[int]:
    """Assign ``c`` every partition of ``topic`` with data due, from its earliest offset; those partitions.
    Raises ArchiveStreamError if a partition now ends before its closing offset."""
    assignment = []
    for partition, end in sorted(end_offsets.items()):
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if high < end:
            raise ArchiveStreamError(
                f"partition {partition} of {topic} ends at offset {high}, before the closing offset {end}: "
                "the topic was truncated or re-created since the night closed; re-publish the night"
            )
        result.partitions[partition] = PartitionRead(first_offset=min(low, end), end_offset=end)
        if end > low:
            assignment.append(TopicPartition(topic, partition, low))
    if assignment:
        c.assign(assignment)
    return {tp.partition for tp in assignment}


def _take_messages(
    messages: list,
    end_offsets: dict[int, int],
    remaining: set[int],
    spool: Spool,
    result: TopicRead,
    progress: Callable[[int], None] | None,
) -> None:
    """Spool a batch of messages up to each partition's closing offset; a partition found complete leaves
    ``remaining``."""
    for msg in messages:
        partition = msg.partition()
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                if partition in remaining and msg.offset() >= end_offsets[partition]:
                    remaining.discard(partition)  # transaction markers can sit at the very end
                continue
            if msg.error().fatal() or not msg.error().retriable():
                raise ArchiveStreamError(f"reading {result.topic} [{partition}] failed: {msg.error().str()}")
            continue
        offset = msg.offset()
        if partition not in remaining or offset >= end_offsets[partition]:
            remaining.discard(partition)  # a message past the close is not this night's
            continue
        _take(spool, result, msg.value() or b"", partition, offset)
        if offset == end_offsets[partition] - 1:
            remaining.discard(partition)
        if progress is not None and result.read % _PROGRESS_EVERY == 0:
            progress(result.read)


def _take(spool: Spool, result: TopicRead, value: bytes, partition: int, offset: int) -> None:
    result.partitions[partition].read += 1
    try:
        spool.add(value, partition, offset)
    except AlertPacketError as e:
        result.rejected.append(RejectedMessage(partition, offset, len(value), str(e)))
        spool.set_aside(value, partition, offset, str(e))
