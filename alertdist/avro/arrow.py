"""The alert <-> Arrow column layout, both ways: Avro alert schemas to table columns, and table rows back to records.

Layout of a row: the alert's top-level scalars (schemavsn, publisher, objectId, candid); every `candidate` field as
its own column (a name that clashes with a top-level one gets the record's prefix: `candidate_candid`);
`prv_candidates` and `fp_hists` as list<struct>; each cutout as a binary column holding its stampData (the gzipped
FITS bytes) plus `<cutout>_fileName`. Types follow Avro: float -> float32, int -> int32, long -> int64,
double -> float64, string -> string, bytes -> binary; a union with null is a nullable column.

One table for every version: the table schema is the union of all shipped ZTF versions' fields (the latest
version's order first, then what only older versions had) plus anything a packet's writer schema adds, so a
night mixing 3.x and 4.x packets is one consistent table and fields a version lacks are null.

Lossless for any writer schema: two more columns, `packet_header` (the index of the packet's header, as written,
in the file's key-value metadata ``alertdist.packet_headers``: a JSON list of base64 texts) and `packet_sync` (its
16-byte sync marker), so `codec.rebuild` gives every packet back byte for byte from its row (`RowRebuilder`),
whatever its version, key order or doc strings. Why this shape: a night carries one or a few distinct headers of
~25 KB (the writer schema is most of a packet's header), so a small int per row and each text once per file cost
nothing; the sync marker is per packet (random in goavro's packets) and takes 16 bytes a row. The headers are
sorted, so the same night gives the same file.

The Parquet archive (`alertdist.archive.parquet`), the columnar filters and the archive readers all use this one
layout; `alertdist.avro.arrow_decoder` turns packets into its tables fast. Errors: `SchemaMergeError` for a
schema no column can hold, `AlertPacketError` (the codec's) for a damaged header list or header.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import pyarrow as pa

from alertdist import schemas
from alertdist.avro import codec
from alertdist.avro.container import AlertPacketError, container_header, parse_container, parse_header

__all__ = [
    "HEADERS_KEY",
    "PACKET_HEADER",
    "PACKET_SYNC",
    "Column",
    "RebuiltRow",
    "RowRebuilder",
    "RowShape",
    "SchemaMergeError",
    "arrow_columns",
    "arrow_schema",
    "headers_from_metadata",
    "headers_metadata",
    "legacy_shape",
    "night_layout",
    "night_table_columns",
    "nullable",
    "packet_headers",
    "record_from_row",
    "row_shape",
    "unify_columns",
    "unify_schemas",
    "writer_schema_of",
]

_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}
_CUTOUT_FIELDS = {"fileName", "stampData"}
PACKET_HEADER, PACKET_SYNC = "packet_header", "packet_sync"  # where a row's packet framing is kept (see above)
HEADERS_KEY = b"alertdist.packet_headers"


class SchemaMergeError(ValueError):
    """Two schema versions give one field incompatible types."""


@dataclass(frozen=True)
class Column:
    """A table column and where its value sits in the Avro record: (top-level field[, child field])."""

    field: pa.Field
    source: tuple[str, ...]


# ----------------------------------------------------------------------------------------- schema derivation


def _arrow_type(avro_type, named: dict, namespace: str | None, path: str = "") -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of an Avro type; named records are registered in ``named`` as they appear;
    ``path`` names the field in errors."""
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if not branches:
            raise SchemaMergeError(f"field {path}: union {avro_type} has no non-null branch")
        arrow, _ = _arrow_type(branches[0], named, namespace, path)
        for branch in branches[1:]:  # ["int", "long"], ["float", "double"]: one column of the wider type
            other, _ = _arrow_type(branch, named, namespace, path)
            wider = arrow if other == arrow else _widened(arrow, other)
            if wider is None:
                raise SchemaMergeError(f"field {path}: union {_shown(avro_type)} mixes {arrow} and {other}")
            arrow = wider
        return arrow, len(branches) != len(avro_type)
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVES:
            return _PRIMITIVES[avro_type], False
        for name in (avro_type, f"{namespace}.{avro_type}"):
            if name in named:
                return named[name], False
        raise SchemaMergeError(f"field {path}: type {avro_type!r} is neither primitive nor a record defined before it")
    kind = avro_type["type"]
    if kind == "record":
        full = _full_name(avro_type, namespace)
        inner = full.rpartition(".")[0] or None
        fields = [
            pa.field(f["name"], *_arrow_type(f["type"], named, inner, f"{path}.{f['name']}".lstrip(".")))
            for f in avro_type["fields"]
        ]
        named[full] = named[full.rpartition(".")[2]] = pa.struct(fields)
        return named[full], False
    if kind == "array":
        item, nullable = _arrow_type(avro_type["items"], named, namespace, path)
        return pa.list_(pa.field("item", item, nullable)), False
    if kind == "map":
        value, nullable = _arrow_type(avro_type["values"], named, namespace, path)
        return pa.map_(pa.string(), pa.field("value", value, nullable)), False
    if kind == "enum":
        return pa.string(), False
    if kind == "fixed":
        return pa.binary(avro_type["size"]), False
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind], False
    raise SchemaMergeError(f"field {path}: Avro type {kind!r} has no Arrow mapping here")


def _full_name(record: dict, namespace: str | None) -> str:
    """A named type's full name: its own if dotted, else under its namespace (or the enclosing one)."""
    name = record["name"]
    return name if "." in name else ".".join(filter(None, [record.get("namespace", namespace), name]))


def arrow_columns(avro_schema: dict) -> list[Column]:
    """The table columns of one Avro alert schema, in record order (see the module docstring for the layout)."""
    named: dict = {}
    namespace = avro_schema.get("namespace") or avro_schema["name"].rpartition(".")[0] or None
    top_names = {f["name"] for f in avro_schema["fields"]}
    columns: list[Column] = []
    for f in avro_schema["fields"]:
        arrow, nullable = _arrow_type(f["type"], named, namespace, f["name"])
        name = f["name"]
        if pa.types.is_struct(arrow) and {c.name for c in arrow} == _CUTOUT_FIELDS:
            stamp, file_name = arrow.field("stampData"), arrow.field("fileName")
            columns.append(Column(pa.field(name, stamp.type, nullable or stamp.nullable), (name, "stampData")))
            columns.append(
                Column(pa.field(f"{name}_fileName", file_name.type, nullable or file_name.nullable), (name, "fileName"))
            )
        elif pa.types.is_struct(arrow):
            for child in arrow:
                column = child.name if child.name not in top_names else f"{name}_{child.name}"
                columns.append(Column(pa.field(column, child.type, nullable or child.nullable), (name, child.name)))
        else:
            columns.append(Column(pa.field(name, arrow, nullable), (name,)))
    return columns


def arrow_schema(avro_schema: dict) -> pa.Schema:
    """The Arrow schema of the Parquet table for alerts written with ``avro_schema``."""
    return pa.schema([c.field for c in arrow_columns(avro_schema)])


def _merge_types(a: pa.DataType, b: pa.DataType, path: str) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return pa.struct(_merge_fields(list(a), list(b), path))
    if pa.types.is_list(a) and pa.types.is_list(b):  # items matched whatever their name (item, element)
        item = _merge_fields([a.value_field], [b.value_field.with_name(a.value_field.name)], path)[0]
        return pa.list_(item)
    wider = _widened(a, b)
    if wider is None:
        raise SchemaMergeError(f"field {path} is {a} in one schema version and {b} in another; cannot be one column")
    return wider


def _widened(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds every value of both without loss (int -> long, float -> double, int -> double), or
    None. The same rule when a night's table is laid out and when an archive's files are read as one dataset."""
    pair = {a, b}
    if pair <= {pa.int32(), pa.int64()}:
        return pa.int64()
    if pair <= {pa.float32(), pa.float64()} or pair in ({pa.int32(), pa.float32()}, {pa.int32(), pa.float64()}):
        return pa.float64()
    return None


def _shown(avro_type) -> str:
    text = json.dumps(avro_type)
    return text if len(text) <= 80 else text[:77] + "..."


def _merge_fields(first: list[pa.Field], second: list[pa.Field], path: str) -> list[pa.Field]:
    """``first``'s fields in order, then those only ``second`` has; a field missing from either becomes nullable."""
    by_name = {f.name: f for f in second}
    merged = []
    for f in first:
        other = by_name.get(f.name)
        if other is None:
            merged.append(f.with_nullable(True))
        else:
            merged.append(
                pa.field(
                    f.name,
                    _merge_types(f.type, other.type, f"{path}.{f.name}".lstrip(".")),
                    f.nullable or other.nullable,
                )
            )
    names = {f.name for f in first}
    merged += [f.with_nullable(True) for f in second if f.name not in names]
    return merged


def unify_columns(versions: Sequence[list[Column]]) -> list[Column]:
    """One column list for alerts of several schema versions (first version's order first)."""
    result = list(versions[0])
    for columns in versions[1:]:
        sources = {c.field.name: c.source for c in result}
        for c in columns:
            if c.field.name in sources and sources[c.field.name] != c.source:
                raise SchemaMergeError(
                    f"column {c.field.name} comes from {sources[c.field.name]} in one version "
                    f"and from {c.source} in another"
                )
        fields = _merge_fields([c.field for c in result], [c.field for c in columns], "")
        source_of = {c.field.name: c.source for c in result} | {c.field.name: c.source for c in columns}
        result = [Column(f, source_of[f.name]) for f in fields]
    return result


def packet_headers(packets: Iterable[bytes]) -> list[bytes]:
    """The distinct headers (as written, up to the sync marker) of ``packets``, sorted: a file's header list."""
    return sorted({p[: parse_container(p).header_end] for p in packets})


def headers_metadata(headers: Sequence[bytes]) -> dict[bytes, bytes]:
    """The key-value metadata that keeps ``headers`` in a Parquet file (read back by `alertdist.access.readers`)."""
    return {HEADERS_KEY: json.dumps([base64.b64encode(h).decode("ascii") for h in headers]).encode("ascii")}


def writer_schema_of(header: bytes) -> dict:
    """The writer schema (JSON) in a packet header."""
    return json.loads(header[slice(*parse_header(header))])


def night_table_columns(writer_schemas: Iterable[dict] = ()) -> list[Column]:
    """The columns of a night's table: every shipped version (newest first) plus the writer schemas seen, every
    column nullable (see `nullable`). Raises SchemaMergeError if a writer schema does not fit (`night_layout`
    sets such packets aside instead)."""
    return _nullable_columns(unify_columns(_shipped_columns() + [arrow_columns(s) for s in writer_schemas]))


def night_layout(headers: Sequence[bytes]) -> tuple[list[Column], dict[bytes, str]]:
    """The night's columns for packets of ``headers``, and the headers whose writer schema cannot be a row of
    that table (a type no column can hold, a union of unlike branches) with the reason: their packets are set
    aside, so one odd packet never fails a programme. Shipped versions first, then the headers in order."""
    columns = unify_columns(_shipped_columns())
    refused: dict[bytes, str] = {}
    for header in headers:
        try:
            columns = unify_columns([columns, arrow_columns(writer_schema_of(header))])
        except (SchemaMergeError, ValueError, KeyError, TypeError) as e:
            refused[header] = f"its writer schema does not fit the night's Parquet table: {e}"
    return _nullable_columns(columns), refused


def _shipped_columns() -> list[list[Column]]:
    versions = sorted(schemas.available_versions(), key=lambda v: tuple(int(x) for x in v.split(".")), reverse=True)
    return [arrow_columns(schemas.load_schema(v)) for v in versions]


def nullable(kind: pa.DataType) -> pa.DataType:
    """``kind`` with every nested field nullable (struct children, list items, map values).

    Why every column of the archive is nullable: a field one schema version writes as required may be optional
    in another (or absent), and nights of both must read as one dataset (`unify_schemas`): a required column in
    one file would refuse the nulls of the next. It costs a column's definition levels, run-length encoded: a
    few bytes per page where there are no nulls."""
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, nullable(f.type), True) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(pa.field(kind.value_field.name, nullable(kind.value_type), True))
    if pa.types.is_large_list(kind):
        return pa.large_list(pa.field(kind.value_field.name, nullable(kind.value_type), True))
    if pa.types.is_map(kind):
        return pa.map_(kind.key_type, pa.field(kind.item_field.name, nullable(kind.item_type), True))
    return kind


def _nullable_columns(columns: list[Column]) -> list[Column]:
    return [Column(pa.field(c.field.name, nullable(c.field.type), True), c.source) for c in columns]


def unify_schemas(file_schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for the files of an archive, whatever versions wrote them: every column of any file (the
    first file's order first), types widened as a night's table widens them, every field nullable. Raises
    SchemaMergeError when two files give one column unlike types."""
    fields: list[pa.Field] | None = None
    for schema in file_schemas:
        own = [pa.field(f.name, f.type, f.nullable) for f in schema]  # no per-file metadata
        fields = own if fields is None else _merge_fields(fields, own, "")
    return pa.schema([pa.field(f.name, nullable(f.type), True) for f in fields or []])


# ------------------------------------------------------------------------------- rows back to records and packets


def _named_types(avro: object, named: dict, namespace: str | None) -> None:
    if isinstance(avro, list):
        for branch in avro:
            _named_types(branch, named, namespace)
    elif isinstance(avro, dict):
        if avro.get("type") == "record":
            full = _full_name(avro, namespace)
            named[full] = named[full.rpartition(".")[2]] = avro
            for f in avro["fields"]:
                _named_types(f["type"], named, full.rpartition(".")[0] or None)
        elif avro.get("type") == "array":
            _named_types(avro["items"], named, namespace)


Fitter = Callable[[object], object]


@dataclass(frozen=True)
class RowShape:
    """How rows written from one packet header become records: its writer schema's columns, and a fitter that cuts
    a rebuilt record down to exactly that schema's fields (the night's table may hold other versions' too)."""

    header: bytes
    sources: dict[str, tuple[str, ...]]  # column name -> (top-level field[, child field])
    fit: Fitter


@cache
def row_shape(header: bytes) -> RowShape:
    """The `RowShape` of a packet header (compiled once per distinct header)."""
    schema = writer_schema_of(header)
    named: dict = {}
    _named_types(schema, named, None)
    sources = {c.field.name: c.source for c in arrow_columns(schema)}
    return RowShape(header, sources, _compile(schema, named) or (lambda value: value))


def _compile(avro: object, named: dict) -> Fitter | None:
    """A fitter for one Avro type; None where the value passes unchanged (every primitive)."""
    if isinstance(avro, str):
        avro = named.get(avro, avro)
        if isinstance(avro, str):
            return None
    if isinstance(avro, list):
        branch = next(b for b in avro if b != "null")
        inner = _compile(branch, named)
        if _is_record(branch, named):  # a nullable record (a cutout) stored as all-null columns was absent
            return lambda v: None if v is None or all(x is None for x in v.values()) else inner(v)
        return None if inner is None else (lambda v: None if v is None else inner(v))
    kind = avro["type"]
    if kind == "record":
        fields = [(f["name"], _compile(f["type"], named)) for f in avro["fields"]]
        if all(fit is None for _, fit in fields):
            names = [name for name, _ in fields]
            return lambda v: {n: v.get(n) for n in names}  # drops fields other versions added
        return lambda v: {n: (v.get(n) if fit is None else fit(v.get(n))) for n, fit in fields}
    if kind == "array":
        item = _compile(avro["items"], named)
        return None if item is None else (lambda v: None if v is None else [item(x) for x in v])
    return None


def _is_record(avro: object, named: dict) -> bool:
    avro = named.get(avro, avro) if isinstance(avro, str) else avro
    return isinstance(avro, dict) and avro.get("type") == "record"


def record_from_row(row: dict, shape: RowShape) -> dict:
    """The alert record of one Parquet row, shaped exactly as the writer schema of ``shape`` writes it."""
    record: dict = {}
    for name, value in row.items():
        source = shape.sources.get(name)
        if source is None:  # another version's column, a partition key or the packet framing
            continue
        if len(source) == 1:
            record[source[0]] = value
        else:
            record.setdefault(source[0], {})[source[1]] = value
    return shape.fit(record)


def headers_from_metadata(metadata: Mapping[bytes, bytes] | None) -> list[bytes]:
    """The packet headers a file keeps (`headers_metadata`'s inverse; none in a file written before they were
    kept). AlertPacketError if the list is damaged."""
    try:
        return [base64.b64decode(h) for h in json.loads((metadata or {}).get(HEADERS_KEY, b"[]"))]
    except (ValueError, TypeError, binascii.Error) as e:
        raise AlertPacketError(f"the file's list of packet headers ({HEADERS_KEY.decode()}) is damaged: {e}") from e


@cache
def legacy_shape(version: str) -> RowShape:
    """Files written before the packet headers were kept: the shipped schema of the row's ``schemavsn``."""
    return row_shape(container_header(schemas.load_schema_text(version).encode("utf-8"), codec.DEFAULT_METADATA_KEYS))


@dataclass(frozen=True, slots=True)
class RebuiltRow:
    """A row as its alert record, with the header and sync marker its packet had (None: a legacy file)."""

    record: dict
    header: bytes | None
    sync: bytes | None

    def packet(self) -> bytes:
        """The packet, byte for byte as archived (a legacy row: encoded anew with its shipped schema)."""
        if self.header is None:
            return codec.encode(self.record, self.record["schemavsn"])
        return codec.rebuild(self.record, self.header, self.sync)


class RowRebuilder:
    """Rows of one file (as dicts) back to records: each with the writer schema of its own packet header."""

    def __init__(self, metadata: Mapping[bytes, bytes] | None) -> None:
        """``metadata``: the file's key-value metadata. AlertPacketError if its headers are damaged."""
        self.headers = headers_from_metadata(metadata)
        try:
            self.shapes = [row_shape(h) for h in self.headers]
        except (SchemaMergeError, ValueError, KeyError, TypeError) as e:
            raise AlertPacketError(f"a packet header the file keeps has no usable writer schema: {e}") from e

    def row(self, row: dict) -> RebuiltRow:
        index = row.get(PACKET_HEADER)
        if index is None:
            try:
                record = record_from_row(row, legacy_shape(row.get("schemavsn")))
            except (ValueError, TypeError):  # an unknown version: `codec.encode` says so when it is rebuilt
                record = row
            return RebuiltRow(record, None, None)
        return RebuiltRow(record_from_row(row, self.shapes[index]), self.headers[index], row[PACKET_SYNC])
