"""Straight-line writers ("plans") for one Avro record type and one *type pattern* of its values, compiled once.

Why generated code: a ZTF history entry is 57 fields, mostly nullable floats. Once the pattern is known (which
values are None, float, int, str...), the union tags and fixed-width values between two variable-width fields
can go out in one `struct` call, ints and strings through cached varint lookups, and the whole record as one
`b"".join((...))`. A plan for pattern (float, None, int) of fields [jd, magpsf, fid] reads, for instance:

    def plan(values):
        v0, v1, v2, = values
        return b''.join((S3(v0), SMALL.get(v2) or INT(v2),))    # S3 = Struct('<dx').pack: jd, magpsf's null

A *guarded* plan first checks that each nullable value is None exactly where its pattern says and that each int
is an int, and returns None otherwise, so a caller that trusts value types can try recent plans without computing
the pattern; `compile_loop` inlines several guarded plans in one loop over an array's records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from alertdist.avro.container import zigzag_varint

__all__ = ["ACCEPTED", "Field", "NotFastPath", "Plan", "compile_loop", "compile_plan", "long_varint", "refusal"]

Plan = Callable[[tuple], "bytes | None"]
_NONE = type(None)
_FIXED = {"float": "f", "double": "d"}  # struct codes; '<' makes them little-endian, as Avro wants
ACCEPTED: dict[
    str, tuple[type, ...]
] = {  # exact types a plan takes: a subset of what alertdist.avro.record_check accepts
    "null": (_NONE,),
    "int": (int,),
    "long": (int,),
    "float": (float, int),
    "double": (float, int),
    "string": (str,),
    "bytes": (bytes, bytearray),
    "record": (dict,),
    "array": (list,),
}


class NotFastPath(Exception):
    """The compiled encoder does not handle this record; the caller should use the exact route."""


@dataclass(frozen=True, slots=True)
class Field:
    """A record field as the plans see it."""

    name: str
    kind: str  # a key of ACCEPTED
    ref: str | None  # the record type of a record field or of an array's items
    null_tag: int | None  # in a two-branch union with null: the zig-zag branch index of null, of the value
    value_tag: int | None


def _ranged(bits: int) -> Callable[[int], bytes]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    @lru_cache(maxsize=1 << 14, typed=True)  # typed: 1.0 and True must not hit 1; pids and candids recur
    def varint(value: int) -> bytes:
        if type(value) is not int or not low <= value <= high:
            raise NotFastPath(f"{value!r} is not a {bits}-bit integer")
        return zigzag_varint(value)

    return varint


_INT, _LONG = _ranged(32), _ranged(64)
_SMALL = {n: zigzag_varint(n) for n in range(-64, 1 << 13)}  # fid, rcid, field, nid, lengths: a dict lookup


def long_varint(value: int) -> bytes:
    """Array counts and byte lengths."""
    return _SMALL.get(value) or _LONG(value)


@lru_cache(maxsize=1 << 12)  # isdiffpos, rbversion, programpi, ssnamenr 'null': few distinct strings
def _text(value: str) -> bytes:
    if type(value) is not str:
        raise NotFastPath(f"{type(value).__name__} where a string belongs")
    encoded = value.encode()
    return (_SMALL.get(len(encoded)) or _LONG(len(encoded))) + encoded


def refusal(reason: str) -> Plan:
    """The plan of a pattern the fast path does not take: it always raises NotFastPath."""

    def plan(values: tuple) -> bytes:
        raise NotFastPath(reason)

    return plan


def compile_plan(
    record_name: str,
    fields: list[Field],
    pattern: tuple[type, ...],
    writers: dict[str, Callable[[object], bytes]],
    *,
    guarded: bool,
) -> Plan:
    """The plan for records of `record_name` whose values have these exact types (a refusal if one does not fit).

    `writers` holds "<record type>" and "<record type>[]" writers for nested records and arrays.
    """
    scope: dict[str, object] = {}
    compiled = _plan_code(record_name, fields, pattern, writers, scope, "")
    if isinstance(compiled, str):
        return refusal(compiled)
    mismatch, body = compiled
    lines = ["def plan(values):", f"    {_unpacked(fields)} = values"]
    if guarded and mismatch:
        lines.append(f"    if {mismatch}:\n        return None")
    lines.append(f"    return {body}")
    return _compiled(lines, record_name, scope)["plan"]


def compile_loop(
    record_name: str,
    fields: list[Field],
    patterns: list[tuple[type, ...]],
    writers: dict[str, Callable[[object], bytes]],
) -> Callable[[Iterable[tuple]], list[bytes | None]]:
    """One loop over many records' values trying these (accepted) patterns in order, the guarded plans inlined:
    no Python call per record. A record that fits none gets None in the returned list."""
    scope: dict[str, object] = {}
    lines = ["def loop(all_values):", "    out = []", "    write = out.append"]
    lines.append(f"    for {_unpacked(fields)} in all_values:")
    branches = [
        code
        for n, p in enumerate(patterns)
        if not isinstance(code := _plan_code(record_name, fields, p, writers, scope, f"P{n}"), str)
    ]  # a refused pattern has no branch
    for n, (mismatch, body) in enumerate(branches):
        lines.append(f"        {'if' if n == 0 else 'elif'} not ({mismatch or 'False'}):\n            write({body})")
    lines.append("        else:\n            write(None)" if branches else "        write(None)")
    lines.append("    return out")
    return _compiled(lines, f"{record_name}[]", scope)["loop"]


def _unpacked(fields: list[Field]) -> str:
    return "".join(f"v{i}, " for i in range(len(fields)))


def _compiled(lines: list[str], what: str, scope: dict) -> dict:
    scope.update({"INT": _INT, "LONG": _LONG, "TEXT": _text, "SMALL": _SMALL})
    exec(compile("\n".join(lines) + "\n", f"<avro plan for {what}>", "exec"), scope)
    return scope


def _plan_code(
    record_name: str, fields: list[Field], pattern: tuple[type, ...], writers: dict, scope: dict, prefix: str
) -> tuple[str, str] | str:
    """(mismatch condition, body expression) of a plan, its constants put in `scope` under `prefix`; or why the
    pattern is refused."""
    parts: list[str] = []
    formats: list[str] = []  # the struct run being built
    arguments: list[str] = []
    mismatches: list[str] = []

    def flush() -> None:
        if formats:
            key, packer = f"{prefix}S{len(scope)}", struct.Struct("<" + "".join(formats))
            if any(a.startswith("v") for a in arguments):
                scope[key] = packer.pack
                parts.append(f"{key}({', '.join(arguments)})")
            else:  # only union tags: a constant
                scope[key] = packer.pack(*map(int, arguments))
                parts.append(key)
            formats.clear(), arguments.clear()

    def tag(value: int) -> None:
        formats.append("x" if value == 0 else "B")  # 'x' writes a zero byte
        arguments.extend([str(value)] if value else [])

    for i, (field, found) in enumerate(zip(fields, pattern)):
        v = f"v{i}"
        if found not in ACCEPTED[field.kind] + ((_NONE,) if field.null_tag is not None else ()):
            return f"{record_name}.{field.name} holds a {found.__name__}"
        if field.null_tag is not None:
            mismatches.append(f"{v} is not None" if found is _NONE else f"{v} is None")
            if found is _NONE:
                tag(field.null_tag)
                continue
            tag(field.value_tag)
        if field.kind in _FIXED:
            formats.append(_FIXED[field.kind])
            arguments.append(v)
            continue
        flush()
        if field.kind in ("int", "long"):  # 1.0 and True would find 1 in SMALL: a guarded plan checks the type
            parts.append(f"SMALL.get({v}) or {field.kind.upper()}({v})")
            mismatches.append(f"{v}.__class__ is not int")
        elif field.kind == "string":
            parts.append(f"TEXT({v})")
        elif field.kind == "bytes":
            parts.append(f"SMALL.get(len({v})) or LONG(len({v})), {v}")
        elif field.kind in ("record", "array"):
            key = f"{prefix}W{i}"
            scope[key] = writers[field.ref + ("[]" if field.kind == "array" else "")]
            parts.append(f"{key}({v})")
    flush()
    body = f"b''.join(({', '.join(parts)},))" if parts else "b''"  # a record of null fields only writes nothing
    return " or ".join(mismatches), body
