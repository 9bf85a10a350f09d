"""Write an Avro record body fast and byte-identical to fastavro, for the schema shapes ZTF alerts use.

Why not fastavro alone: it picks the branch of every union value by validating the value against each branch, and
a ZTF alert carries ~2,500 nullable values (~1.3 ms an alert). Records of one producer come in a few *type
patterns* (which values are None, float, int, str). For each record type and pattern met, a small function is
compiled once: fixed-width values (union tags, floats, doubles) go out in one `struct` call per run, ints and
strings in between.

The pattern is also a strict check: it is accepted only if every value's exact type fits its field (float or int
for float/double, int for int/long, str, bytes, dict for a record, list for an array, None where the union allows
it); ints are range-checked as they are written; a record must carry exactly its schema's fields. Anything else
raises (`NotFastPath` or the failing call's own error) and the caller takes the exact route, record checker +
fastavro, so odd inputs behave exactly as before, only slower.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from itertools import repeat
from operator import call, itemgetter

from tasks.avro_container import zigzag_varint

__all__ = ["BodyEncoder", "NotFastPath", "compile_body_encoder"]

BodyEncoder = Callable[[object], bytes]
_Writer = Callable[[object], bytes]
_NONE = type(None)
_FIXED = {"float": "f", "double": "d", "boolean": "?"}  # struct codes, little-endian as Avro wants
_VARWIDTH = ("int", "long", "string", "bytes")
_ACCEPTED: dict[str, tuple[type, ...]] = {  # exact types, a subset of what tasks.record_check accepts
    "null": (_NONE,), "boolean": (bool,), "int": (int,), "long": (int,), "float": (float, int),
    "double": (float, int), "string": (str,), "bytes": (bytes, bytearray), "record": (dict,), "array": (list,),
}
_SMALL = {n: zigzag_varint(n) for n in range(-(1 << 13), 1 << 14)}  # fid, rcid, field, nid, lengths: one lookup
_MAX_PATTERNS = 64  # per record type; a producer shows a handful, more means something odd: start over


class NotFastPath(Exception):
    """The compiled encoder does not handle this record; the caller should use the exact route."""


class _Unsupported(Exception):
    """The schema has a shape this module does not compile (maps, enums, wider unions, logical types...)."""


def _ranged(bits: int) -> Callable[[int], bytes]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    @lru_cache(maxsize=1 << 16)  # pids and candids recur across an object's history
    def varint(value: int) -> bytes:
        if not low <= value <= high:
            raise NotFastPath(f"{value} out of range for a {bits}-bit integer")
        return zigzag_varint(value)

    return varint


_INT, _LONG = _ranged(32), _ranged(64)


@lru_cache(maxsize=1 << 12)  # isdiffpos, rbversion, programpi, ssnamenr 'null': a few distinct strings
def _text(value: str) -> bytes:
    encoded = value.encode()
    return (_SMALL.get(len(encoded)) or _LONG(len(encoded))) + encoded


def compile_body_encoder(schema: dict) -> BodyEncoder | None:
    """For a `fastavro.parse_schema` record schema: a function record -> body bytes; None if not compilable."""
    try:
        return _Compiler(schema["__named_schemas"]).record(schema)
    except _Unsupported:
        return None


class _Compiler:
    """A writer (value -> bytes) per record name, each compiling one plan per type pattern on first sight."""

    def __init__(self, named: dict):
        self.named = named
        self.writers: dict[str, _Writer] = {}
        self.array_writers: dict[str, _Writer] = {}

    def record(self, schema: dict) -> _Writer:
        name = schema["name"]
        if name in self.writers:
            return self.writers[name]
        self.writers[name] = lambda value: writer(value)  # a recursive type may refer to itself
        self.array_writers[name] = lambda items: write_array(items)
        fields = [(f["name"], *self._field_kind(f["type"])) for f in schema["fields"]]
        names = [name for name, *_ in fields]
        getter = itemgetter(*names) if len(names) > 1 else (lambda r, only=names[0]: (r[only],))
        size = len(names)
        plans: dict[tuple[type, ...], Callable[[tuple], bytes]] = {}

        def plan_of(pattern: tuple[type, ...]) -> Callable[[tuple], bytes]:
            if len(plans) >= _MAX_PATTERNS:
                plans.clear()
            plan = plans[pattern] = self._plan(name, fields, pattern)
            return plan

        def writer(value: object) -> bytes:
            if type(value) is not dict or len(value) != size:
                raise NotFastPath(f"not a plain dict with exactly the {size} fields of {name}")
            values = getter(value)
            pattern = tuple(map(type, values))
            return (plans.get(pattern) or plan_of(pattern))(values)

        def write_array(items: list) -> bytes:
            """All items at once: the per-item steps run as C-level maps, not a Python loop."""
            if not items:
                return b"\x00"
            if {dict} != set(map(type, items)) or {size} != set(map(len, items)):
                raise NotFastPath(f"not plain dicts with exactly the {size} fields of {name}")
            values = list(map(getter, items))
            patterns = list(map(tuple, map(map, repeat(type), values)))
            chosen = list(map(plans.get, patterns))
            if None in chosen:
                chosen = [plans.get(pattern) or plan_of(pattern) for pattern in patterns]
            count = _SMALL.get(len(items)) or _LONG(len(items))
            return count + b"".join(map(call, chosen, values)) + b"\x00"

        self.writers[name], self.array_writers[name] = writer, write_array
        return writer

    def _field_kind(self, avro_type: object) -> tuple[str, str | None, int | None, int | None]:
        """(kind, referenced record name, null branch tag, value branch tag) of a field type."""
        if isinstance(avro_type, list):
            if len(avro_type) != 2 or avro_type.count("null") != 1:
                raise _Unsupported(f"union {avro_type}")
            null_index = avro_type.index("null")
            kind, ref = self._value_kind(avro_type[1 - null_index])
            return kind, ref, 2 * null_index, 2 * (1 - null_index)  # zig-zag of the branch index
        return (*self._value_kind(avro_type), None, None)

    def _value_kind(self, avro_type: object) -> tuple[str, str | None]:
        if isinstance(avro_type, str):
            if avro_type in _ACCEPTED and avro_type not in ("record", "array"):
                return avro_type, None
            if avro_type in self.named:
                return self._value_kind(self.named[avro_type])
            raise _Unsupported(avro_type)
        kind = avro_type.get("type") if isinstance(avro_type, dict) else None
        if kind == "record":
            self.record(avro_type)
            return "record", avro_type["name"]
        if kind == "array":
            item_kind, item_ref = self._value_kind(avro_type["items"])
            if item_kind != "record":
                raise _Unsupported(f"array of {item_kind}")
            return "array", item_ref
        if kind in _ACCEPTED and kind not in ("record", "array") and "logicalType" not in avro_type:
            return kind, None
        raise _Unsupported(str(kind))

    def _plan(self, name: str, fields: list, pattern: tuple[type, ...]) -> Callable[[tuple], bytes]:
        """One straight-line writer for records of this type pattern: `b"".join((<part>, <part>, ...))`."""
        scope: dict[str, object] = {"SMALL": _SMALL, "INT": _INT, "LONG": _LONG, "TEXT": _text}
        parts: list[str] = []
        formats: list[str] = []
        arguments: list[str] = []

        def flush() -> None:
            if not formats:
                return
            packer = struct.Struct("<" + "".join(formats))
            key = f"S{len(scope)}"
            if any(a.startswith("v") for a in arguments):
                scope[key] = packer.pack
                parts.append(f"{key}({', '.join(arguments)})")
            else:  # only union tags: a constant
                scope[key] = packer.pack(*map(int, arguments))
                parts.append(key)
            formats.clear(), arguments.clear()

        def tag(value: int) -> None:
            formats.append("x" if value == 0 else "B")
            arguments.extend([] if value == 0 else [str(value)])

        for i, ((_, kind, ref, null_tag, value_tag), found) in enumerate(zip(fields, pattern)):
            v = f"v{i}"
            if found not in _ACCEPTED[kind] + ((_NONE,) if null_tag is not None else ()):
                return _refuse(f"{name}: field {fields[i][0]} holds a {found.__name__}")
            if found is _NONE and null_tag is not None:
                tag(null_tag)
                continue
            if value_tag is not None:
                tag(value_tag)
            if kind in _FIXED:
                formats.append(_FIXED[kind])
                arguments.append(v)
                continue
            flush()
            if kind in ("int", "long"):
                parts.append(f"SMALL.get({v}) or {kind.upper()}({v})")
            elif kind == "string":
                parts.append(f"TEXT({v})")
            elif kind == "bytes":
                parts.append(f"SMALL.get(len({v})) or LONG(len({v})), {v}")
            elif kind in ("record", "array"):
                scope[f"W{i}"] = (self.writers if kind == "record" else self.array_writers)[ref]
                parts.append(f"W{i}({v})")
        flush()
        unpack = "".join(f"v{i}, " for i in range(len(fields)))
        source = f"def plan(values):\n    {unpack}= values\n    return b''.join(({', '.join(parts)},))\n"
        exec(compile(source, f"<avro plan for {name}>", "exec"), scope)  # noqa: S102 - our own generated source
        return scope["plan"]


def _refuse(reason: str) -> Callable[[tuple], bytes]:
    def plan(values: tuple) -> bytes:
        raise NotFastPath(reason)

    return plan
