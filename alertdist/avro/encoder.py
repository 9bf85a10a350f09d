"""Write an Avro record body fast and byte-identical to fastavro, for the schema shapes ZTF alerts use.

Why not fastavro alone: it picks the branch of every union value by validating the value against each branch, and
a ZTF alert carries ~2,500 nullable values (~1.3 ms an alert). Records of one producer come in a few *type
patterns* (which values are None, float, int, str); for each record type and pattern met, a plan is compiled once
(`alertdist.avro.plans`) and reused.

Strict (the default): the pattern of every record is computed and is also the check. It is accepted only if every
value's exact type fits its field (float or int for float/double, int for int/long, str, bytes, dict for a record,
list for an array, None where the union allows it); ints are range-checked as they are written; a record must be a
plain dict with exactly its schema's fields. So the fast path takes only records the record checker takes.

Trusting value types (`trust_values=True`, for producers such as the simulator whose records are known to fit):
recent plans are tried in turn (an array's records: one compiled loop over the patterns learned); each checks
where the Nones are and writes, and the pattern is computed only when none fits. Ints, strings, records and arrays
are still checked as they are written; a float field's value is written as `float(value)`, so a bool or a numpy
number there is not refused.

Anything the fast path does not take raises (`NotFastPath` or the failing call's own error) and the caller takes
the exact route, record checker + fastavro, so odd inputs behave exactly as before, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from operator import call, itemgetter

from alertdist.avro.plans import ACCEPTED, Field, NotFastPath, Plan, compile_loop, compile_plan, long_varint

__all__ = ["BodyEncoder", "NotFastPath", "compile_body_encoder"]

BodyEncoder = Callable[[object], bytes]
_Writer = Callable[[object], bytes]
_MAX_PATTERNS = 64  # per record type; a producer shows a handful, more means something odd: start over
_RECENT = 4  # plans a trusting writer tries before computing the pattern
_LOOP_PATTERNS = 6  # patterns inlined in a trusting array loop (ZTF histories: detection, non-detection)


class _Unsupported(Exception):
    """The schema has a shape this module does not compile (maps, enums, wider unions, logical types...)."""


def compile_body_encoder(schema: dict, *, trust_values: bool = False) -> BodyEncoder | None:
    """For a `fastavro.parse_schema` record schema: a function record -> body bytes; None if not compilable."""
    try:
        return _Compiler(schema["__named_schemas"], trust_values).record(schema)
    except _Unsupported:
        return None


class _Compiler:
    """A writer per record type ("name") and per array of it ("name[]"), each with its own plans."""

    def __init__(self, named: dict, trust_values: bool):
        self.named = named
        self.trust_values = trust_values
        self.writers: dict[str, _Writer] = {}

    def record(self, schema: dict) -> _Writer:
        name = schema["name"]
        if name not in self.writers:
            self.writers[name] = lambda value: record_writer(value)  # a recursive type may refer to itself
            self.writers[f"{name}[]"] = lambda items: array_writer(items)
            if not schema["fields"]:
                raise _Unsupported(f"record {name} without fields")
            fields = [Field(f["name"], *self._field_kind(f["type"])) for f in schema["fields"]]
            make = _trusting_writers if self.trust_values else _strict_writers
            record_writer, array_writer = make(name, fields, self.writers)
            self.writers[name], self.writers[f"{name}[]"] = record_writer, array_writer
        return self.writers[name]

    def _field_kind(self, avro_type: object) -> tuple[str, str | None, int | None, int | None]:
        """(kind, record type referred to, null branch tag, value branch tag) of a field type."""
        if isinstance(avro_type, list):
            if len(avro_type) != 2 or avro_type.count("null") != 1:
                raise _Unsupported(f"union {avro_type}")
            null_index = avro_type.index("null")
            kind, ref = self._value_kind(avro_type[1 - null_index])
            return kind, ref, 2 * null_index, 2 * (1 - null_index)  # zig-zag of the branch index
        return (*self._value_kind(avro_type), None, None)

    def _value_kind(self, avro_type: object) -> tuple[str, str | None]:
        if isinstance(avro_type, str):
            if avro_type in ACCEPTED and avro_type not in ("record", "array"):
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
        if kind in ACCEPTED and kind not in ("record", "array") and "logicalType" not in avro_type:
            return kind, None
        raise _Unsupported(str(kind))


def _values_getter(fields: list[Field]) -> Callable[[dict], tuple]:
    names = [field.name for field in fields]
    return itemgetter(*names) if len(names) > 1 else (lambda record, only=names[0]: (record[only],))


def _array_values(items: object, name: str, size: int, get_values: Callable[[dict], tuple]) -> list[tuple]:
    """Each item's field values, in order; NotFastPath unless ``items`` is a list of plain dicts with exactly the
    ``size`` fields of record ``name`` (one check for the whole array, at C level)."""
    if type(items) is not list:
        raise NotFastPath(f"not a list of {name}")
    if items and ({dict} != set(map(type, items)) or {size} != set(map(len, items))):
        raise NotFastPath(f"not plain dicts with exactly the {size} fields of {name}")
    return list(map(get_values, items))


def _plan_cache(name: str, fields: list[Field], writers: dict, *, guarded: bool) -> tuple[dict, Callable]:
    plans: dict[tuple[type, ...], Plan] = {}

    def plan_of(pattern: tuple[type, ...]) -> Plan:
        if len(plans) >= _MAX_PATTERNS:
            plans.clear()
        plan = plans[pattern] = compile_plan(name, fields, pattern, writers, guarded=guarded)
        return plan

    return plans, plan_of


def _strict_writers(name: str, fields: list[Field], writers: dict) -> tuple[_Writer, _Writer]:
    """Writers that compute every record's type pattern: the pattern picks the plan and is the type check."""
    get_values, size = _values_getter(fields), len(fields)
    plans, plan_of = _plan_cache(name, fields, writers, guarded=False)

    def write_record(value: object) -> bytes:
        if type(value) is not dict or len(value) != size:
            raise NotFastPath(f"not a plain dict with exactly the {size} fields of {name}")
        values = get_values(value)
        pattern = tuple(map(type, values))
        return (plans.get(pattern) or plan_of(pattern))(values)

    def write_array(items: object) -> bytes:
        """All items at once: the per-item steps run as C-level maps, not a Python loop."""
        values = _array_values(items, name, size, get_values)
        if not values:
            return b"\x00"
        patterns = list(map(tuple, map(map, repeat(type), values)))
        chosen = list(map(plans.get, patterns))
        if None in chosen:
            chosen = [plans.get(pattern) or plan_of(pattern) for pattern in patterns]
        return long_varint(len(items)) + b"".join(map(call, chosen, values)) + b"\x00"

    return write_record, write_array


def _trusting_writers(name: str, fields: list[Field], writers: dict) -> tuple[_Writer, _Writer]:
    """Writers that try the recently used (guarded) plans first and compute a pattern only when none fits.

    Arrays go through one compiled loop with the first patterns learned inlined (no Python call per item); an item
    that fits none of them takes the per-record way.
    """
    get_values, size = _values_getter(fields), len(fields)
    plans, plan_of = _plan_cache(name, fields, writers, guarded=True)
    recent: list[Plan] = []
    learned: list[tuple[type, ...]] = []  # accepted patterns, first seen first: what the array loop inlines
    loop: Callable | None = None

    def write_values(values: tuple) -> bytes:
        nonlocal loop
        for plan in recent:
            body = plan(values)
            if body is not None:
                if plan is not recent[0]:  # history entries come in runs: try the last one used first
                    recent.remove(plan)
                    recent.insert(0, plan)
                return body
        pattern = tuple(map(type, values))
        plan = plans.get(pattern) or plan_of(pattern)
        body = plan(values)  # a refused pattern raises NotFastPath here, before it could enter `recent`
        recent.insert(0, plan)
        del recent[_RECENT:]
        if pattern not in learned and len(learned) < _LOOP_PATTERNS:
            learned.append(pattern)
            loop = None  # recompiled with it at the next array
        return body

    def write_record(value: object) -> bytes:
        if type(value) is not dict or len(value) != size:
            raise NotFastPath(f"not a plain dict with exactly the {size} fields of {name}")
        return write_values(get_values(value))

    def write_array(items: object) -> bytes:
        nonlocal loop
        values = _array_values(items, name, size, get_values)
        if not values:
            return b"\x00"
        if loop is None and learned:
            loop = compile_loop(name, fields, learned, writers)
        bodies = loop(values) if loop is not None else [None] * len(values)
        if None in bodies:
            bodies = [body if body is not None else write_values(v) for body, v in zip(bodies, values)]
        return long_varint(len(items)) + b"".join(bodies) + b"\x00"

    return write_record, write_array
