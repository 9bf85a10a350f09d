"""Decode and encode ZTF alert packets: one Avro container file, one `ztf.alert` record, per Kafka message.

Why not `fastavro.reader`: it re-parses the ~25 KB writer schema embedded in every message. Here the container
framing is parsed by hand (`tasks.avro_container`), the writer schema is parsed once per distinct schema text
and cached, and the block body goes to `fastavro.schemaless_reader`. A projection reads a *prefix schema*
(the writer schema cut after the last wanted top-level field): Avro is sequential, so fastavro simply stops
before the history and the cutouts.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO

import fastavro

import schemas
from tasks.avro_container import AlertPacketError, Container, build_container, parse_container

__all__ = [
    "AlertPacketError",
    "ContainerLayout",
    "PacketInfo",
    "container_layout",
    "decode",
    "encode",
    "peek",
    "schema_version_of",
    "writer_schema",
]

RECORD_NAME = "ztf.alert"
# Top-level fields that are not nullable in any ZTF version; a writer schema lacking one is not a ZTF alert.
REQUIRED_FIELDS = ("schemavsn", "publisher", "objectId", "candid", "candidate")
DEFAULT_METADATA_KEYS = ("avro.codec", "avro.schema")
_PEEK_FIELDS_THROUGH = "candidate"
_SCHEMA_CACHE_SIZE = 16  # distinct writer schemas kept; production streams carry one or two
_PROJECTION_CACHE_SIZE = 64

_schema_cache: dict[bytes, _WriterSchema] = {}
_schema_cache_lock = threading.Lock()


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


# ----------------------------------------------------------------------------------------------- public API


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
    schema = _writer_schema_at(packet, container.schema_start, container.schema_end)
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
    schema = _writer_schema_at(packet, container.schema_start, container.schema_end)
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


def encode(
    record: Mapping,
    schema_version: str = schemas.LATEST_VERSION,
    *,
    sync_marker: bytes | None = None,
    metadata_keys: tuple[str, ...] = DEFAULT_METADATA_KEYS,
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

    Raises
    ------
    AlertPacketError
        If the version is unknown or the record does not fit the schema (missing required field, wrong type,
        unknown field), naming the field path.
    """
    try:
        schema_text = _schema_text_bytes(schema_version)
    except ValueError as e:
        raise AlertPacketError(f"cannot encode: {e}") from e
    schema = _writer_schema_at(schema_text, 0, len(schema_text))
    problem = schema.check_record(record)
    if problem is not None:
        raise AlertPacketError(f"cannot encode record as ZTF alert {schema_version}: {problem}")
    if record["schemavsn"] != schema_version:
        raise AlertPacketError(
            f"cannot encode: record says schemavsn {record['schemavsn']!r} but schema_version is {schema_version!r}"
        )
    body = BytesIO()
    try:
        fastavro.schemaless_writer(body, schema.parsed, record)
    except Exception as e:  # the check above should catch everything; keep the one-exception promise anyway
        raise AlertPacketError(f"cannot encode candid {record.get('candid')!r} as {schema_version}: {e}") from e
    if sync_marker is None:
        sync_marker = _derived_sync_marker(record["candid"])
    return build_container(schema_text, body.getvalue(), sync_marker, tuple(metadata_keys))


def writer_schema(packet: bytes) -> dict:
    """The packet's writer schema as a JSON dict (cached and shared between calls: copy before modifying)."""
    packet = _as_bytes(packet)
    container = parse_container(packet)
    return _writer_schema_at(packet, container.schema_start, container.schema_end).public_json


def schema_version_of(packet: bytes) -> str:
    """The packet's `schemavsn`, read from the first field without decoding the rest."""
    return decode(packet, ["schemavsn"])["schemavsn"]


def container_layout(packet: bytes) -> ContainerLayout:
    """Header metadata order and sync marker of a packet, for a byte-exact `encode(decode(p), ..., **layout)`."""
    container = parse_container(_as_bytes(packet))
    return ContainerLayout(container.metadata_keys, container.sync_marker)


# --------------------------------------------------------------------------------------- reading the body


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


@lru_cache(maxsize=None)
def _known_ztf_fields() -> frozenset[str]:
    """Top-level field names of every shipped ZTF version."""
    return frozenset(f["name"] for v in schemas.available_versions() for f in schemas.load_schema(v)["fields"])


@lru_cache(maxsize=None)
def _schema_text_bytes(version: str) -> bytes:
    return schemas.load_schema_text(version).encode("utf-8")


@lru_cache(maxsize=None)
def _shipped_versions_by_text() -> dict[bytes, str]:
    """Shipped schema texts to their version; the JSON's own "version" is unreliable (4.02's says 4.01)."""
    return {_schema_text_bytes(v): v for v in schemas.available_versions()}


def _derived_sync_marker(candid: int) -> bytes:
    return hashlib.blake2b(b"ztf.alert candid %d" % candid, digest_size=16).digest()


# ------------------------------------------------------------------------------------ writer schema cache


def _writer_schema_at(buffer: bytes, start: int, end: int) -> _WriterSchema:
    """The compiled writer schema for the text at buffer[start:end]; compares in place, copies only on a miss."""
    length = end - start
    for entry in tuple(_schema_cache.values()):
        if len(entry.text) == length and buffer.startswith(entry.text, start):
            return entry
    text = buffer[start:end]
    entry = _WriterSchema(text)
    with _schema_cache_lock:
        while len(_schema_cache) >= _SCHEMA_CACHE_SIZE:
            del _schema_cache[next(iter(_schema_cache))]
        _schema_cache[text] = entry
    return entry


@dataclass(frozen=True, slots=True)
class _Projection:
    names: tuple[str, ...]  # requested, in requested order
    prefix: dict | None  # parsed prefix schema, None when no requested field is in the packet
    whole: bool  # the prefix is the whole schema, so the record must fill the block exactly


class _WriterSchema:
    """One distinct writer schema text, parsed once, with its derived prefix schemas and record checker."""

    def __init__(self, text: bytes):
        self.text = text
        try:
            self._json = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise AlertPacketError(f"the writer schema in the header ({len(text)} bytes) is not JSON: {e}") from e
        self.public_json = json.loads(text)
        try:
            self.parsed = fastavro.parse_schema(self._json)
        except Exception as e:
            raise AlertPacketError(f"the writer schema in the header is not a valid Avro schema: {e}") from e
        if not isinstance(self.parsed, dict) or self.parsed.get("type") != "record":
            raise AlertPacketError(f"the writer schema in the header is not a record schema, expected {RECORD_NAME}")
        if self.parsed["name"] != RECORD_NAME:
            raise AlertPacketError(f"the packet holds a {self.parsed['name']!r} record, expected {RECORD_NAME!r}")
        self.field_names = tuple(f["name"] for f in self.parsed["fields"])
        self.version_hint = _shipped_versions_by_text().get(text) or f"unshipped schema {self._json.get('version')!r}"
        missing = [name for name in REQUIRED_FIELDS if name not in self.field_names]
        if missing:
            raise AlertPacketError(f"the writer schema of {RECORD_NAME} lacks required field(s) {', '.join(missing)}")
        if len(set(self.field_names)) != len(self.field_names):
            raise AlertPacketError(f"the writer schema of {RECORD_NAME} repeats a field name: {self.field_names}")
        try:
            where = _array_of_empty_items(self.parsed, self.parsed["__named_schemas"])
        except RecursionError as e:
            raise AlertPacketError("the writer schema in the header is nested too deeply") from e
        if where is not None:
            raise AlertPacketError(
                f"the writer schema has an array of zero-byte items at {where}; refused, as its count could "
                "make a reader loop without consuming input"
            )
        self.peek_prefix = self._prefix(self.field_names.index(_PEEK_FIELDS_THROUGH) + 1)
        self._projections: dict[tuple[str, ...], _Projection] = {}
        self._checker: _Checker | None = None
        self._lock = threading.Lock()

    def _prefix(self, n_fields: int) -> dict:
        """The writer schema cut after its first `n_fields` fields: reading with it stops there."""
        doc = json.loads(self.text)
        doc["fields"] = doc["fields"][:n_fields]
        try:
            return fastavro.parse_schema(doc)
        except Exception as e:  # named types are defined before use, so a prefix of a valid schema is valid
            raise AlertPacketError(f"cannot cut the writer schema after field {n_fields}: {e}") from e

    def projection(self, names: tuple[str, ...]) -> _Projection:
        found = self._projections.get(names)
        if found is not None:
            return found
        unknown = [n for n in names if n not in self.field_names and n not in _known_ztf_fields()]
        if unknown:
            raise AlertPacketError(
                f"unknown field(s) {', '.join(map(repr, unknown))}: {RECORD_NAME} {self.version_hint} has "
                f"{', '.join(self.field_names)}"
            )
        positions = [self.field_names.index(n) for n in names if n in self.field_names]
        n_fields = max(positions) + 1 if positions else 0
        if n_fields == len(self.field_names):
            prefix = self.parsed
        else:
            prefix = self._prefix(n_fields) if n_fields else None
        projection = _Projection(names, prefix, whole=n_fields == len(self.field_names))
        with self._lock:
            if len(self._projections) >= _PROJECTION_CACHE_SIZE:
                self._projections.clear()
            self._projections[names] = projection
        return projection

    def check_record(self, record: object) -> str | None:
        """None if the record fits this schema, else a description naming the field path."""
        if self._checker is None:
            self._checker = _compile_checker(self.parsed, self.parsed["__named_schemas"], {})
        problem = self._checker(record)
        return None if problem is None else ("record" + problem if problem.startswith(":") else problem[1:])


def _array_of_empty_items(schema: object, named: dict, seen: frozenset = frozenset(), path: str = "") -> str | None:
    """Path of an array whose items may encode to zero bytes (null, empty record), else None."""
    if isinstance(schema, str):
        if schema in named and schema not in seen:
            return _array_of_empty_items(named[schema], named, seen | {schema}, path)
        return None
    if isinstance(schema, list):
        return next((w for s in schema if (w := _array_of_empty_items(s, named, seen, path)) is not None), None)
    kind = schema["type"]
    if kind in ("record", "error"):
        seen = seen | {schema["name"]}
        for field in schema["fields"]:
            where = _array_of_empty_items(field["type"], named, seen, f"{path}.{field['name']}" if path else field["name"])
            if where is not None:
                return where
        return None
    if kind == "array":
        if _encodes_to_nothing(schema["items"], named, frozenset()):
            return path or "top level"
        return _array_of_empty_items(schema["items"], named, seen, f"{path}[]")
    if kind == "map":
        return _array_of_empty_items(schema["values"], named, seen, f"{path}{{}}")
    return None


def _encodes_to_nothing(schema: object, named: dict, seen: frozenset) -> bool:
    if isinstance(schema, str):
        if schema == "null":
            return True
        if schema in named and schema not in seen:
            return _encodes_to_nothing(named[schema], named, seen | {schema})
        return False
    if isinstance(schema, list):
        return False  # the branch index takes a byte
    kind = schema["type"]
    if kind in ("record", "error"):
        seen = seen | {schema["name"]}
        return all(_encodes_to_nothing(f["type"], named, seen) for f in schema["fields"])
    if kind == "fixed":
        return schema["size"] == 0
    if isinstance(kind, str) and kind not in ("array", "map", "enum"):
        return _encodes_to_nothing(kind, named, seen)
    return False


# ------------------------------------------------------------------------------------------ record checker
# fastavro's writer silently coerces (1.5 is written as long 1, "19.2" as float) and fastavro.validation takes
# ~10 ms per alert, so encode checks records with closures compiled once per schema (~0.5 ms per alert).
# A checker returns None when the value fits, else ".field[index].field: what is wrong".

_Checker = Callable[[object], "str | None"]


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _integer(kind: str, bits: int) -> _Checker:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: object) -> str | None:
        if not (type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))):
            return f": expected {kind}, got {_shown(value)}"
        return None if low <= value <= high else f": {value} is out of range for {kind}"

    return check


def _real(kind: str) -> _Checker:
    def check(value: object) -> str | None:
        if type(value) is float or type(value) is int or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            return None
        return f": expected {kind}, got {_shown(value)}"

    return check


def _instance(kind: str, accepted: type | tuple[type, ...]) -> _Checker:
    return lambda value: None if isinstance(value, accepted) else f": expected {kind}, got {_shown(value)}"


_PRIMITIVES: dict[str, _Checker] = {
    "null": lambda value: None if value is None else f": expected null, got {_shown(value)}",
    "boolean": _instance("boolean", bool),
    "int": _integer("int", 32),
    "long": _integer("long", 64),
    "float": _real("float"),
    "double": _real("double"),
    "string": _instance("string", str),
    "bytes": _instance("bytes", (bytes, bytearray)),
}


def _compile_checker(schema: object, named: dict, compiled: dict[str, _Checker | None]) -> _Checker:
    """A checker for `schema`; `compiled` holds named records, None while one is being compiled (recursion)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema not in compiled:
            _compile_checker(named[schema], named, compiled)
        return compiled[schema] or (lambda value: compiled[schema](value))
    if isinstance(schema, list):
        return _union_checker([_compile_checker(branch, named, compiled) for branch in schema], schema)
    kind = schema["type"]
    if kind == "record":
        compiled[schema["name"]] = None
        compiled[schema["name"]] = checker = _record_checker(schema, named, compiled)
        return checker
    if kind == "array":
        return _array_checker(_compile_checker(schema["items"], named, compiled))
    if kind in _PRIMITIVES:  # {"type": "int", ...} with annotations
        return _PRIMITIVES[kind]
    return lambda value: None  # enum, fixed, map: in no ZTF schema; fastavro's writer still rejects misfits


def _record_checker(schema: dict, named: dict, compiled: dict) -> _Checker:
    fields = [(f["name"], _compile_checker(f["type"], named, compiled), "default" in f) for f in schema["fields"]]
    names = frozenset(name for name, _, _ in fields)

    def check(value: object) -> str | None:
        if not isinstance(value, Mapping):
            return f": expected a {schema['name']} record (a mapping), got {_shown(value)}"
        for name, check_field, has_default in fields:
            if name in value:
                problem = check_field(value[name])
                if problem is not None:
                    return f".{name}{problem}"
            elif not has_default:
                return f".{name}: required field is missing"
        if not names.issuperset(value.keys()):
            return f": unknown field(s) {', '.join(sorted(map(str, value.keys() - names)))} not in {schema['name']}"
        return None

    return check


def _union_checker(branches: list[_Checker], schema: list) -> _Checker:
    non_null = [check for check, branch in zip(branches, schema) if branch != "null"]
    if len(branches) == 2 and len(non_null) == 1:  # the ZTF case, a nullable X: report X's own complaint
        only = non_null[0]
        return lambda value: None if value is None else only(value)
    return lambda value: (
        None if any(check(value) is None for check in branches) else f": {_shown(value)} fits none of {schema}"
    )


def _array_checker(check_item: _Checker) -> _Checker:
    def check(value: object) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f": expected an array (list), got {_shown(value)}"
        for i, item in enumerate(value):
            problem = check_item(item)
            if problem is not None:
                return f"[{i}]{problem}"
        return None

    return check
