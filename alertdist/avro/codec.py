"""Decode and encode ZTF alert packets: one Avro container file, one `ztf.alert` record, per Kafka message.

Why not `fastavro.reader`/`writer`: the reader re-parses the ~25 KB writer schema embedded in every message, and the
writer resolves each of an alert's ~2,500 nullable values by trial. Here the container framing is handled by hand
(`alertdist.avro.container`), the writer schema is parsed once per distinct text (`alertdist.avro.writer_schemas`), the
block body is read by `fastavro.schemaless_reader` and written by a compiled encoder (`alertdist.avro.encoder`), with
the record checker (`alertdist.avro.record_check`) and fastavro as the exact route for anything unusual. A projection
reads a *prefix schema* (the writer schema cut after the last wanted top-level field): Avro is sequential, so fastavro
simply stops before the history and the cutouts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO

import fastavro

from alertdist import schemas
from alertdist.avro.container import AlertPacketError, Container, frame_record, parse_container, parse_header
from alertdist.avro.plausible import KNOWN_PROGRAMIDS, alert_problem
from alertdist.avro.writer_schemas import (
    RECORD_NAME,
    REQUIRED_FIELDS,
    WriterSchema,
    shipped_schema,
    writer_schema_at,
)

__all__ = [
    "DEFAULT_METADATA_KEYS",
    "KNOWN_PROGRAMIDS",
    "REQUIRED_FIELDS",
    "AlertPacketError",
    "ContainerLayout",
    "PacketInfo",
    "alert_problem",
    "container_layout",
    "decode",
    "encode",
    "info_problem",
    "peek",
    "rebuild",
    "schema_version_of",
    "writer_schema",
]

DEFAULT_METADATA_KEYS = ("avro.codec", "avro.schema")


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """What the publisher needs to route and account for a packet, without decoding history or cutouts."""

    schemavsn: str
    objectId: str
    candid: int
    programid: int
    jd: float
    pid: int
    size: int


@dataclass(frozen=True, slots=True)
class ContainerLayout:
    """The container details a record does not carry; pass them to `encode` to reproduce a packet byte-exact."""

    metadata_keys: tuple[str, ...]
    sync_marker: bytes
    header_end: int  # packet[:header_end] is the header as written: `rebuild` takes it


def decode(packet: bytes, fields: Iterable[str] | None = None) -> dict:
    """Decode one alert packet, fully or only some top-level fields.

    Parameters
    ----------
    packet : bytes
        One Kafka message value: an Avro container with one `ztf.alert` record.
    fields : iterable of str, optional
        Top-level fields wanted. Only the record up to the last of them (in writer order) is read, so asking for
        `candidate` never touches `prv_candidates` or the cutouts. A field absent from this packet's schema but
        present in some shipped ZTF version (e.g. `fp_hists` in 3.x) comes back as None; any other name raises.

    Returns
    -------
    dict
        The full record (equal to what `fastavro.reader` yields), or exactly the requested fields in the
        requested order.

    Raises
    ------
    AlertPacketError
        On any malformed packet, naming what is wrong and where; or on an unknown field name.
    """
    packet = _as_bytes(packet)
    container = parse_container(packet)
    schema = writer_schema_at(packet, container.schema_start, container.schema_end)
    if fields is None:
        return _read_record(packet, container, schema.parsed, whole=True)
    projection = schema.projection(_field_names(fields))
    if projection.prefix is None:
        values = {}
    else:
        values = _read_record(packet, container, projection.prefix, whole=projection.whole)
    return {name: values.get(name) for name in projection.names}


def peek(packet: bytes) -> PacketInfo:
    """Validate the framing and read only the leading fields through `candidate`: cheap routing facts.

    Raises
    ------
    AlertPacketError
        If the packet is malformed or its candidate lacks `programid`, `jd` or `pid`.
    """
    packet = _as_bytes(packet)
    container = parse_container(packet)
    schema = writer_schema_at(packet, container.schema_start, container.schema_end)
    record = _read_record(packet, container, schema.peek_prefix, whole=False)
    try:
        candidate = record["candidate"]
        return PacketInfo(
            schemavsn=record["schemavsn"],
            objectId=record["objectId"],
            candid=record["candid"],
            programid=candidate["programid"],
            jd=candidate["jd"],
            pid=candidate["pid"],
            size=len(packet),
        )
    except (KeyError, TypeError) as e:
        raise AlertPacketError(f"cannot peek: the packet's candidate lacks {e} (schema {schema.version_hint})") from e


def info_problem(info: PacketInfo, programids: Iterable[int] | None = None) -> str | None:
    """What makes a peeked packet implausible (NaN jd, negative candid, ...: `alertdist.avro.plausible`), or None.

    ``programids``: the deployment's programmes (default ZTF's 0-3). Call it wherever a packet is first looked
    at, and set the packet aside with the answer: it is the one rule, never copy it.
    """
    return alert_problem(
        objectId=info.objectId,
        candid=info.candid,
        programid=info.programid,
        jd=info.jd,
        pid=info.pid,
        programids=KNOWN_PROGRAMIDS if programids is None else frozenset(programids),
    )


def encode(
    record: Mapping,
    schema_version: str = schemas.LATEST_VERSION,
    *,
    sync_marker: bytes | None = None,
    metadata_keys: tuple[str, ...] = DEFAULT_METADATA_KEYS,
    check: bool = True,
) -> bytes:
    """Encode one alert record as a ZTF packet, header schema text exactly as ZTF embedded it.

    Parameters
    ----------
    record : mapping
        A `ztf.alert` record of `schema_version`; `record["schemavsn"]` must equal `schema_version`. Fields with a
        default (the nullable ones) may be omitted; unknown fields are refused rather than silently dropped.
    schema_version : str
        One of `schemas.available_versions()`.
    sync_marker : bytes, optional
        16 bytes. Default: derived from `candid`, so the same record always encodes to the same bytes.
    metadata_keys : tuple of str
        Header metadata order. ZTF's 3.x packets and some 4.x ones put `avro.codec` first, other 4.x ones (written
        by goavro, whose map order is random) put `avro.schema` first; `container_layout(packet)` gives a
        packet's own layout.
    check : bool
        False for a trusted producer (the simulator): the type of each float/double value is not checked, it is
        written as `float(value)` (so a bool or a numpy number there is not refused). Everything else is checked
        as usual, and the bytes of a valid record are the same either way.

    Raises
    ------
    AlertPacketError
        If the version is unknown or the record does not fit the schema (missing required field, wrong type,
        unknown field), naming the field path.

    Notes
    -----
    Plain records (dicts, lists, float/int/str/bytes values, every field present) take a compiled fast path that
    checks them as strictly as the record checker (`check=False`: less the float types); anything else is checked,
    then written by fastavro. Both give the same bytes.
    """
    schema = shipped_schema(schema_version)
    body = _body(record, schema, f"ZTF alert {schema_version}", check=check)
    if record["schemavsn"] != schema_version:
        raise AlertPacketError(
            f"cannot encode: record says schemavsn {record['schemavsn']!r} but schema_version is {schema_version!r}"
        )
    if sync_marker is None:
        sync_marker = _derived_sync_marker(record["candid"])
    return frame_record(schema.header(tuple(metadata_keys)), body, sync_marker)


def rebuild(record: Mapping, header: bytes, sync_marker: bytes) -> bytes:
    """Encode a record as the packet it came from, whatever its schema: the header as written and its sync marker.

    Parameters
    ----------
    record : mapping
        A record of the writer schema in ``header`` (every field present, as `decode` returns it).
    header : bytes
        ``packet[:container_layout(packet).header_end]``: magic and metadata (writer schema text, key order).
    sync_marker : bytes
        The packet's 16-byte sync marker.

    Raises
    ------
    AlertPacketError
        If the header is not a container header or the record does not fit its writer schema.
    """
    schema = writer_schema_at(header, *parse_header(header))
    return frame_record(header, _body(record, schema, f"its writer schema ({schema.version_hint})"), sync_marker)


def writer_schema(packet: bytes) -> dict:
    """The packet's writer schema as a JSON dict (cached and shared between calls: copy before modifying)."""
    packet = _as_bytes(packet)
    container = parse_container(packet)
    return writer_schema_at(packet, container.schema_start, container.schema_end).public_json


def schema_version_of(packet: bytes) -> str:
    """The packet's `schemavsn`, read from the first field without decoding the rest."""
    return decode(packet, ["schemavsn"])["schemavsn"]


def container_layout(packet: bytes) -> ContainerLayout:
    """Header metadata order and sync marker of a packet, for a byte-exact `encode(decode(p), ..., **layout)`."""
    container = parse_container(_as_bytes(packet))
    return ContainerLayout(container.metadata_keys, container.sync_marker, container.header_end)


# ------------------------------------------------------------------------------------------------- helpers


def _as_bytes(packet: object) -> bytes:
    if isinstance(packet, bytes):
        return packet
    if isinstance(packet, (bytearray, memoryview)):
        return bytes(packet)
    raise AlertPacketError(f"a packet must be bytes, got {type(packet).__name__}")


def _read_record(packet: bytes, container: Container, parsed_schema: dict, *, whole: bool) -> dict:
    """Decode the block body with a (possibly prefix) schema; `whole` means it must use the block exactly."""
    stream = BytesIO(packet)
    stream.seek(container.body_start)
    try:
        record = fastavro.schemaless_reader(stream, parsed_schema, None)
    except Exception as e:  # fastavro raises EOFError, IndexError, UnicodeDecodeError, struct.error, ...
        raise AlertPacketError(
            f"cannot decode the {RECORD_NAME} record in the block at bytes {container.body_start}-{container.body_end}"
            f" (stopped near byte {stream.tell()}): {type(e).__name__}: {e}"
        ) from e
    consumed_to = stream.tell()
    if consumed_to > container.body_end or (whole and consumed_to != container.body_end):
        raise AlertPacketError(
            f"the {RECORD_NAME} record in the block at byte {container.body_start} ends at byte {consumed_to}, "
            f"but the block declares its end at byte {container.body_end}"
        )
    return record


def _field_names(fields: Iterable[str]) -> tuple[str, ...]:
    if isinstance(fields, (str, bytes)):
        raise TypeError(f"fields must be an iterable of field names, not a single {type(fields).__name__}")
    names = tuple(dict.fromkeys(fields))
    bad = [name for name in names if not isinstance(name, str)]
    if bad:
        raise TypeError(f"field names must be str, got {bad!r}")
    return names


def _body(record: Mapping, schema: WriterSchema, what: str, *, check: bool = True) -> bytes:
    """The record's encoded body: the compiled encoder, else the record checker then fastavro's own writer."""
    body = schema.fast_body(record, trust_values=not check)
    if body is not None:
        return body
    problem = schema.check_record(record)
    if problem is not None:
        raise AlertPacketError(f"cannot encode record as {what}: {problem}")
    out = BytesIO()
    try:
        fastavro.schemaless_writer(out, schema.parsed, record)
    except Exception as e:  # the check should catch everything; keep the one-exception promise anyway
        raise AlertPacketError(f"cannot encode candid {record.get('candid')!r} as {what}: {e}") from e
    return out.getvalue()


def _derived_sync_marker(candid: int) -> bytes:
    return hashlib.blake2b(b"ztf.alert candid %d" % candid, digest_size=16).digest()
