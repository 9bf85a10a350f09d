"""Framing of single-record Avro Object Container Files, the way ZTF ships each alert as one Kafka message.

Why parse this by hand: `fastavro.reader` re-parses the ~25 KB writer schema embedded in every message. The
container itself is tiny (magic, a map of bytes, a 16-byte sync marker, one block), so we read it here, check
every length before trusting it, and leave only the block body to fastavro with a cached parsed schema.
This module knows nothing about schemas or records.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAGIC",
    "SYNC_SIZE",
    "AlertPacketError",
    "Container",
    "build_container",
    "container_header",
    "frame_record",
    "parse_container",
    "parse_header",
    "read_length",
    "read_long",
    "zigzag_varint",
]

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
_MAX_VARINT_BYTES = 10  # a zig-zag encoded 64-bit long never needs more
_METADATA_SCHEMA = "avro.schema"
_METADATA_CODEC = "avro.codec"


class AlertPacketError(ValueError):
    """The one exception for a packet that cannot be decoded or a record that cannot be encoded.

    The message says what was wrong and where (byte offset, field or block).
    """


@dataclass(frozen=True, slots=True)
class Container:
    """Where the parts of a single-record container are; offsets index into the packet bytes."""

    schema_start: int
    schema_end: int
    metadata_keys: tuple[str, ...]  # in header order; reproducing a packet byte-exact needs the order
    header_end: int  # packet[:header_end] is the header as written (magic + metadata), before the sync marker
    sync_marker: bytes
    body_start: int
    body_end: int


def zigzag_varint(value: int) -> bytes:
    """Avro's encoding of a long: zig-zag, then base-128 little-endian varint (14 bits at a time, from tables)."""
    n = (value << 1) ^ (value >> 63)
    if n < 0x4000:
        return _LAST_14_BITS[n]
    parts = []
    while n >= 0x4000:
        parts.append(_MORE_14_BITS[n & 0x3FFF])
        n >>= 14
    parts.append(_LAST_14_BITS[n])
    return b"".join(parts)


def _varint_tables() -> tuple[list[bytes], list[bytes]]:
    """Varints of 0..16383 as the last group(s), and as two groups followed by more (continuation bits set)."""
    last = [bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(0x4000)]
    more = [bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(0x4000)]
    return last, more


_LAST_14_BITS, _MORE_14_BITS = _varint_tables()


def read_long(packet: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read one Avro long at `pos`; return it and the position after it."""
    if pos < len(packet) and packet[pos] < 0x80:  # one byte: every count and key length in a ZTF header
        n = packet[pos]
        return (n >> 1) ^ -(n & 1), pos + 1
    shift = 0
    n = 0
    for i in range(pos, min(pos + _MAX_VARINT_BYTES, len(packet))):
        byte = packet[i]
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (n >> 1) ^ -(n & 1), i + 1
        shift += 7
    if len(packet) - pos >= _MAX_VARINT_BYTES:
        raise AlertPacketError(f"{what} at byte {pos}: varint longer than {_MAX_VARINT_BYTES} bytes")
    raise AlertPacketError(f"{what} at byte {pos}: packet truncated inside a varint ({len(packet)} bytes in all)")


def read_length(packet: bytes, pos: int, what: str, limit: int) -> tuple[int, int]:
    """Read a length and check it fits in what is left before `limit`, before anything is allocated."""
    length, after = read_long(packet, pos, what)
    if length < 0:
        raise AlertPacketError(f"{what} at byte {pos}: negative length {length}")
    if length > limit - after:
        raise AlertPacketError(
            f"{what} at byte {pos}: length {length} exceeds the {max(limit - after, 0)} bytes left (truncated packet?)"
        )
    return length, after


def _read_metadata(packet: bytes, pos: int) -> tuple[dict[str, tuple[int, int]], tuple[str, ...], int]:
    """Read the header's metadata map; values are returned as (start, end) spans so nothing big is copied."""
    spans: dict[str, tuple[int, int]] = {}
    keys: list[str] = []
    end = len(packet)
    while True:
        count, pos = read_long(packet, pos, "metadata map block count")
        if count == 0:
            return spans, tuple(keys), pos
        if count < 0:  # a negative count is followed by the block's byte size (Avro spec)
            count = -count
            _, pos = read_length(packet, pos, "metadata map block size", end)
        for _ in range(count):
            key_len, pos = read_length(packet, pos, "metadata key length", end)
            try:
                key = packet[pos : pos + key_len].decode("utf-8")
            except UnicodeDecodeError as e:
                raise AlertPacketError(f"metadata key at byte {pos} is not UTF-8") from e
            if key in spans:
                raise AlertPacketError(f"metadata key {key!r} repeated at byte {pos}")
            pos += key_len
            value_len, pos = read_length(packet, pos, f"metadata value length of {key!r}", end)
            spans[key] = (pos, pos + value_len)
            keys.append(key)
            pos += value_len


def parse_container(packet: bytes) -> Container:
    """Check the framing of a one-block, one-record, uncompressed container and locate its parts.

    Raises AlertPacketError for anything else: bad magic, malformed or truncated header, a codec other than
    null, no block, a block count other than one, a block size that disagrees with the packet length, a
    wrong trailing sync marker, or bytes after the block (a second block).
    """
    if len(packet) < len(MAGIC):
        raise AlertPacketError(
            f"packet of {len(packet)} bytes is too short for an Avro container (needs magic {MAGIC!r})"
        )
    if not packet.startswith(MAGIC):
        raise AlertPacketError(f"bytes 0-3 are {packet[:4]!r}, not the Avro container magic {MAGIC!r}")
    spans, keys, pos = _read_metadata(packet, len(MAGIC))
    if _METADATA_SCHEMA not in spans:
        raise AlertPacketError(f"header metadata has no {_METADATA_SCHEMA!r} (keys: {list(keys)})")
    if _METADATA_CODEC in spans:
        codec = packet[slice(*spans[_METADATA_CODEC])]
        if codec != b"null":
            raise AlertPacketError(
                f"unsupported codec {codec.decode('utf-8', 'replace')!r} in header: ZTF packets are uncompressed (null)"
            )
    if len(packet) - pos < SYNC_SIZE:
        raise AlertPacketError(f"header truncated at byte {len(packet)}: no room for the 16-byte sync marker at {pos}")
    sync = packet[pos : pos + SYNC_SIZE]
    pos += SYNC_SIZE
    if pos == len(packet):
        raise AlertPacketError(f"no data block after the header (ends at byte {pos}): the packet holds zero records")
    count, pos_after_count = read_long(packet, pos, "block record count")
    if count != 1:
        raise AlertPacketError(f"block at byte {pos} holds {count} records; a ZTF packet holds exactly one")
    size, body_start = read_length(packet, pos_after_count, "block byte size", len(packet) - SYNC_SIZE)
    body_end = body_start + size
    if packet[body_end : body_end + SYNC_SIZE] != sync:
        raise AlertPacketError(f"sync marker after the block (byte {body_end}) does not match the header's")
    trailing = len(packet) - body_end - SYNC_SIZE
    if trailing:
        raise AlertPacketError(
            f"{trailing} bytes after the block's sync marker at byte {body_end + SYNC_SIZE}: "
            "a second block? a ZTF packet holds exactly one block"
        )
    return Container(*spans[_METADATA_SCHEMA], keys, pos - SYNC_SIZE, sync, body_start, body_end)


def parse_header(header: bytes) -> tuple[int, int]:
    """(start, end) of the writer schema text in a header as `Container.header_end` cuts it; AlertPacketError if
    ``header`` is not exactly one container header with a schema."""
    spans, _keys, pos = _read_metadata(header, len(MAGIC)) if header.startswith(MAGIC) else ({}, (), -1)
    if pos != len(header) or _METADATA_SCHEMA not in spans:
        raise AlertPacketError(f"{len(header)} bytes are not one Avro container header with {_METADATA_SCHEMA!r}")
    return spans[_METADATA_SCHEMA]


def build_container(schema_text: bytes, body: bytes, sync_marker: bytes, metadata_keys: tuple[str, ...]) -> bytes:
    """Frame one encoded record as a container, with the metadata keys in the given order."""
    return frame_record(container_header(schema_text, metadata_keys), body, sync_marker)


def container_header(schema_text: bytes, metadata_keys: tuple[str, ...]) -> bytes:
    """Everything before the sync marker: magic and the metadata map. The same for every packet of one schema and
    key order, so an encoder can build it once and reuse it."""
    values = {_METADATA_SCHEMA: schema_text, _METADATA_CODEC: b"null"}
    if (
        _METADATA_SCHEMA not in metadata_keys
        or len(set(metadata_keys)) != len(metadata_keys)
        or not set(metadata_keys) <= set(values)
    ):
        raise AlertPacketError(
            f"metadata_keys must order {_METADATA_SCHEMA!r} and optionally {_METADATA_CODEC!r}, got {metadata_keys!r}"
        )
    parts = [MAGIC, zigzag_varint(len(metadata_keys))]
    for key in metadata_keys:
        encoded_key = key.encode("utf-8")
        parts += [zigzag_varint(len(encoded_key)), encoded_key, zigzag_varint(len(values[key])), values[key]]
    parts.append(b"\x00")  # end of the metadata map
    return b"".join(parts)


def frame_record(header: bytes, body: bytes, sync_marker: bytes) -> bytes:
    """A container from `container_header(...)`, one record's encoded body and the 16-byte sync marker."""
    if len(sync_marker) != SYNC_SIZE:
        raise AlertPacketError(f"sync marker must be {SYNC_SIZE} bytes, got {len(sync_marker)}")
    return b"".join((header, sync_marker, b"\x02", zigzag_varint(len(body)), body, sync_marker))  # \x02: 1 record
