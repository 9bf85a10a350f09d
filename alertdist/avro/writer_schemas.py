"""The writer schemas met in packets, each parsed once per distinct text and kept with what is derived from it.

Why a cache keyed by the schema *text*: every ZTF packet embeds its ~25 KB writer schema, and a stream carries one
or two distinct texts, so parsing (JSON, fastavro, prefix schemas for projections, the record checker, the compiled
encoder) happens once per text instead of once per message. A text is also sanity-checked once: a `ztf.alert`
record with its required fields, and no array whose items encode to zero bytes (a reader could spin on it).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cache

import fastavro

from alertdist import schemas
from alertdist.avro.container import AlertPacketError, container_header
from alertdist.avro.encoder import BodyEncoder, compile_body_encoder
from alertdist.avro.record_check import RecordChecker, compile_record_checker

__all__ = [
    "PEEK_FIELDS_THROUGH",
    "RECORD_NAME",
    "REQUIRED_FIELDS",
    "Projection",
    "WriterSchema",
    "schema_text_bytes",
    "shipped_schema",
    "writer_schema_at",
]

RECORD_NAME = "ztf.alert"
# Top-level fields that are not nullable in any ZTF version; a writer schema lacking one is not a ZTF alert.
REQUIRED_FIELDS = ("schemavsn", "publisher", "objectId", "candid", "candidate")
PEEK_FIELDS_THROUGH = "candidate"
_SCHEMA_CACHE_SIZE = 16  # distinct writer schemas kept; production streams carry one or two
_PROJECTION_CACHE_SIZE = 64

_schema_cache: dict[bytes, WriterSchema] = {}
_schema_cache_lock = threading.Lock()
_shipped: dict[str, WriterSchema] = {}  # by version, for encode: a handful of entries at most


def writer_schema_at(buffer: bytes, start: int, end: int) -> WriterSchema:
    """The compiled writer schema for the text at buffer[start:end]; compares in place, copies only on a miss."""
    length = end - start
    for entry in tuple(_schema_cache.values()):
        if len(entry.text) == length and buffer.startswith(entry.text, start):
            return entry
    text = buffer[start:end]
    entry = WriterSchema(text)
    with _schema_cache_lock:
        while len(_schema_cache) >= _SCHEMA_CACHE_SIZE:
            del _schema_cache[next(iter(_schema_cache))]
        _schema_cache[text] = entry
    return entry


def shipped_schema(version: str) -> WriterSchema:
    """The compiled schema of a shipped ZTF version (for encoding); AlertPacketError if the version is unknown."""
    if not isinstance(version, str):
        raise AlertPacketError(f"cannot encode: a schema version is a string such as '4.02', not {version!r}")
    found = _shipped.get(version)
    if found is None:
        try:
            text = schema_text_bytes(version)
        except ValueError as e:
            raise AlertPacketError(f"cannot encode: {e}") from e
        found = _shipped[version] = writer_schema_at(text, 0, len(text))
    return found


@cache
def schema_text_bytes(version: str) -> bytes:
    """A shipped version's schema text exactly as ZTF embeds it; ValueError for an unknown version."""
    return schemas.load_schema_text(version).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Projection:
    """What `decode(packet, fields)` reads: a prefix of the writer schema, and which names to return."""

    names: tuple[str, ...]  # requested, in requested order
    prefix: dict | None  # parsed prefix schema, None when no requested field is in the packet
    whole: bool  # the prefix is the whole schema, so the record must fill the block exactly


class WriterSchema:
    """One distinct writer schema text, parsed once, with its prefix schemas, record checker and encoder."""

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
        where = _self_reference(self.parsed, self.parsed["__named_schemas"])
        if where is not None:
            raise AlertPacketError(
                f"the writer schema's record type {where} refers to itself; refused, as data nested deeply "
                "enough would overflow the decoder's stack (no ZTF schema is recursive)"
            )
        self.peek_prefix = self._prefix(self.field_names.index(PEEK_FIELDS_THROUGH) + 1)
        self._projections: dict[tuple[str, ...], Projection] = {}
        self._checker: RecordChecker | None = None
        self._encoders: dict[bool, BodyEncoder | None] = {}  # by trust_values; None: schema not compilable
        self._headers: dict[tuple[str, ...], bytes] = {}
        self._lock = threading.Lock()

    def _prefix(self, n_fields: int) -> dict:
        """The writer schema cut after its first `n_fields` fields: reading with it stops there."""
        doc = json.loads(self.text)
        doc["fields"] = doc["fields"][:n_fields]
        try:
            return fastavro.parse_schema(doc)
        except Exception as e:  # named types are defined before use, so a prefix of a valid schema is valid
            raise AlertPacketError(f"cannot cut the writer schema after field {n_fields}: {e}") from e

    def projection(self, names: tuple[str, ...]) -> Projection:
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
        projection = Projection(names, prefix, whole=n_fields == len(self.field_names))
        with self._lock:
            if len(self._projections) >= _PROJECTION_CACHE_SIZE:
                self._projections.clear()
            self._projections[names] = projection
        return projection

    def check_record(self, record: object) -> str | None:
        """None if the record fits this schema, else a description naming the field path."""
        if self._checker is None:
            self._checker = compile_record_checker(self.parsed)
        return self._checker(record)

    def fast_body(self, record: object, *, trust_values: bool = False) -> bytes | None:
        """The record's encoded body from the compiled encoder, or None when it turns the record down.

        Byte-identical to `fastavro.schemaless_writer` for every record it accepts; unless `trust_values`, it
        accepts only records `check_record` accepts (see `alertdist.avro.encoder`). None sends the caller to the exact
        route: check, then fastavro.
        """
        encoder = self._encoders.get(trust_values, False)
        if encoder is False:
            encoder = self._encoders[trust_values] = compile_body_encoder(self.parsed, trust_values=trust_values)
        if encoder is None:
            return None
        try:
            return encoder(record)
        except Exception:  # NotFastPath, or a value the fast path cannot write: the exact route decides
            return None

    def header(self, metadata_keys: tuple[str, ...]) -> bytes:
        """The container header (magic + metadata) for this schema text, built once per metadata key order."""
        found = self._headers.get(metadata_keys)
        if found is None:
            found = self._headers[metadata_keys] = container_header(self.text, metadata_keys)
        return found


@cache
def _known_ztf_fields() -> frozenset[str]:
    """Top-level field names of every shipped ZTF version."""
    return frozenset(f["name"] for v in schemas.available_versions() for f in schemas.load_schema(v)["fields"])


@cache
def _shipped_versions_by_text() -> dict[bytes, str]:
    """Shipped schema texts to their version (a packet's "version" attribute is whatever its writer put there)."""
    return {schema_text_bytes(v): v for v in schemas.available_versions()}


def _self_reference(schema: object, named: dict, enclosing: tuple[str, ...] = ()) -> str | None:
    """Name of a record type that contains a reference to itself (directly or through others), else None."""
    if isinstance(schema, str):
        if schema in enclosing:
            return schema
        if schema in named:
            return _self_reference(named[schema], named, enclosing)
        return None
    if isinstance(schema, list):
        return next((w for s in schema if (w := _self_reference(s, named, enclosing)) is not None), None)
    kind = schema["type"]
    if kind in ("record", "error"):
        inside = (*enclosing, schema["name"])
        return next((w for f in schema["fields"] if (w := _self_reference(f["type"], named, inside)) is not None), None)
    if kind == "array":
        return _self_reference(schema["items"], named, enclosing)
    if kind == "map":
        return _self_reference(schema["values"], named, enclosing)
    return None


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
            inner = f"{path}.{field['name']}" if path else field["name"]
            where = _array_of_empty_items(field["type"], named, seen, inner)
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
