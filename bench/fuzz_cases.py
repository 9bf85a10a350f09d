"""Bad packets made from good ones: the mutations tests/test_fuzz.py and bench/fuzz.py both try.

Each mutation returns a `Mutant`: its bytes, what was done, and whether the result *cannot* be a valid
packet (``must_fail``): a truncation, an impossible length or count, a schema that is not a ZTF alert. Other
mutations (a flipped bit in a float, random bytes spliced into a cutout) may still leave a decodable packet;
for those the only promise is "decoded, or AlertPacketError", never another exception, a hang or a crash.

The lengths are crafted at known places: in the container header (the schema's length, the block's record
count and byte size) and inside the Avro body (a string's length, an array's item count, a bytes field's
length, a union's branch index), found by encoding the record's leading fields with a prefix of its own schema.

`implausible` mutants are valid Avro that no stage may compute with (a NaN or 1e300 jd, a negative candid, an
objectId with a newline): they decode, and must still be set aside (``implausible``). `ODD_NAMES` are file and
member names a source must carry through a rejection header and a log line without breaking.
"""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import dataclass

import fastavro

from alertdist.avro import codec
from alertdist.avro.container import MAGIC, build_container, parse_container, zigzag_varint

__all__ = [
    "CRAFTED_LENGTHS",
    "IMPLAUSIBLE",
    "ODD_NAMES",
    "WRONG_SCHEMAS",
    "Mutant",
    "body_varint_at",
    "crafted_body_length",
    "crafted_header_length",
    "deep_schema",
    "flip_bits",
    "implausible",
    "oversized",
    "random_mutant",
    "recursive_schema_packet",
    "splice",
    "truncate",
    "wrong_schema",
]

#: Lengths and counts no packet can hold: beyond any body, or negative.
CRAFTED_LENGTHS = (1 << 62, 1 << 60, 1 << 40, (1 << 31) - 1, 1 << 31, -1, -2, -(1 << 31), -(1 << 62))


@dataclass(frozen=True)
class Mutant:
    kind: str
    packet: bytes
    must_fail: bool  # no valid packet can result: a full decode must refuse it
    past_candidate: bool = False  # the damage lies after `candidate`, beyond what `codec.peek` reads
    implausible: bool = False  # it decodes, but a field the system computes with is unusable: it must be set aside

    @property
    def peek_must_fail(self) -> bool:
        """Whether even the publisher's cheap check (`codec.peek`) must refuse it."""
        return self.must_fail and not self.past_candidate

    @property
    def name(self) -> str:
        return f"{self.kind}.avro"


# ------------------------------------------------------------------------------------------- plain bytes


def truncate(packet: bytes, length: int) -> Mutant:
    length = max(0, min(length, len(packet) - 1))
    return Mutant(f"truncated-at-{length}", packet[:length], True)


def flip_bits(packet: bytes, positions: list[int]) -> Mutant:
    data = bytearray(packet)
    for bit in positions:
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    # flipping a bit of the magic, the sync markers or the schema can only fail; elsewhere it may still decode
    return Mutant(f"bits-{len(positions)}-flipped", bytes(data), bytes(data[:4]) != MAGIC)


def splice(packet: bytes, start: int, junk: bytes, cut: int) -> Mutant:
    start = start % (len(packet) + 1)
    return Mutant(f"spliced-{len(junk)}-at-{start}", packet[:start] + junk + packet[start + cut :], False)


# ----------------------------------------------------------------------------------- the container header


def _rebuild(packet: bytes, *, schema_text: bytes | None = None, body: bytes | None = None) -> bytes:
    container = parse_container(packet)
    return build_container(
        packet[container.schema_start : container.schema_end] if schema_text is None else schema_text,
        packet[container.body_start : container.body_end] if body is None else body,
        container.sync_marker,
        container.metadata_keys,
    )


def _replace_varint(data: bytes, position: int, value: int) -> bytes:
    end = position
    while data[end] & 0x80:
        end += 1
    return data[:position] + zigzag_varint(value) + data[end + 1 :]


def crafted_header_length(packet: bytes, where: str, value: int) -> Mutant:
    """Replace the schema's length, the block's record count or its byte size with ``value``."""
    container = parse_container(packet)
    schema_len = container.schema_end - container.schema_start
    body_len = container.body_end - container.body_start
    positions = {
        "schema-length": (container.schema_start - len(zigzag_varint(schema_len)), schema_len),
        "block-size": (container.body_start - len(zigzag_varint(body_len)), body_len),
        "block-count": (container.body_start - len(zigzag_varint(body_len)) - 1, 1),
    }
    position, actual = positions[where]
    return Mutant(f"{where}-{value}", _replace_varint(packet, position, value), value != actual)


# --------------------------------------------------------------------------------------- inside the body


def _field_offset(packet: bytes, field: str) -> int:
    """Where ``field``'s encoding starts inside the block body: the encoded size of the fields before it."""
    schema = codec.writer_schema(packet)
    names = [f["name"] for f in schema["fields"]]
    record = codec.decode(packet, names[: names.index(field)])
    prefix = dict(schema, fields=schema["fields"][: names.index(field)])
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(prefix), record)
    return out.tell()


def body_varint_at(packet: bytes, field: str, skip: int = 0) -> int:
    """Body offset of the varint at the start of ``field`` after skipping ``skip`` varints (e.g. a union index)."""
    container = parse_container(packet)
    position = container.body_start + _field_offset(packet, field)
    for _ in range(skip):
        while packet[position] & 0x80:
            position += 1
        position += 1
    return position - container.body_start


#: (field, varints to skip, what that varint is) for the places lengths are crafted in.
BODY_LENGTHS = {
    "schemavsn-length": ("schemavsn", 0),
    "objectId-length": ("objectId", 0),
    "prv_candidates-branch": ("prv_candidates", 0),
    "prv_candidates-count": ("prv_candidates", 1),
    "cutoutScience-branch": ("cutoutScience", 0),
    "cutoutScience-fileName-length": ("cutoutScience", 1),
}


PAST_CANDIDATE = {"prv_candidates", "fp_hists", "cutoutScience", "cutoutTemplate", "cutoutDifference"}


def crafted_body_length(packet: bytes, where: str, value: int) -> Mutant:
    """Replace a length, count or union branch inside the record with an impossible ``value``."""
    field, skip = BODY_LENGTHS[where]
    container = parse_container(packet)
    body = packet[container.body_start : container.body_end]
    offset = body_varint_at(packet, field, skip)
    # a count of 2^60 items or a branch index of 2^31 cannot be satisfied by a body of a few hundred KB; but a
    # small negative array count is legal Avro (a block with its byte size), so that one may, in theory, decode
    must_fail = not (where.endswith("-count") and -(1 << 31) < value < 0)
    if where.endswith("-branch") and value in (-1, -2):
        # fastavro indexes a union's branches like a Python list: -1 and -2 alias the two real branches, so this
        # invalid Avro decodes as if the index were right (a Java or Go reader would refuse it)
        must_fail = False
    return Mutant(
        f"{where}-{value}",
        _rebuild(packet, body=_replace_varint(body, offset, value)),
        must_fail,
        past_candidate=field in PAST_CANDIDATE,
    )


# ----------------------------------------------------------------------------------------- wrong schemas


def _other_record(schema: dict) -> dict:
    return dict(schema, name="weather", namespace="noaa")


def _without_candid(schema: dict) -> dict:
    return dict(schema, fields=[f for f in schema["fields"] if f["name"] != "candid"])


def _candid_as_string(schema: dict) -> dict:
    return dict(schema, fields=[dict(f, type="string") if f["name"] == "candid" else f for f in schema["fields"]])


def _fields_reversed(schema: dict) -> dict:
    return dict(schema, fields=list(reversed(schema["fields"])))


#: name -> (schema text from the packet's own schema, must the packet then fail?)
WRONG_SCHEMAS = {
    "other-record": (lambda s: json.dumps(_other_record(s)).encode(), True),
    "no-candid": (lambda s: json.dumps(_without_candid(s)).encode(), True),
    "candid-as-string": (lambda s: json.dumps(_candid_as_string(s)).encode(), False),
    "fields-reversed": (lambda s: json.dumps(_fields_reversed(s)).encode(), False),
    "not-json": (lambda s: json.dumps(s).encode()[:-7], True),
    "a-string-schema": (lambda s: b'"string"', True),
    "a-number": (lambda s: b"42", True),
    "empty": (lambda s: b"", True),
    "not-utf8": (lambda s: b"\xff\xfe" + json.dumps(s).encode(), True),
    "deeply-nested": (lambda s: deep_schema(s, 100_000), True),
    "3.0-schema": (lambda s: _shipped_text("3.0"), False),
    "4.02-schema": (lambda s: _shipped_text("4.02"), False),
}


def _shipped_text(version: str) -> bytes:
    from alertdist import schemas

    return schemas.load_schema_text(version).encode()


def deep_schema(schema: dict, depth: int) -> bytes:
    """The packet's schema with one more field whose type nests ``depth`` arrays (JSON deeper than any parser likes)."""
    nested = '{"type": "array", "items": ' * depth + '"int"' + "}" * depth
    text = json.dumps(schema)
    return (text[: text.rindex("]")] + f', {{"name": "deep", "type": {nested}}}' + text[text.rindex("]") :]).encode()


def wrong_schema(packet: bytes, which: str) -> Mutant:
    make, must_fail = WRONG_SCHEMAS[which]
    return Mutant(f"schema-{which}", _rebuild(packet, schema_text=make(codec.writer_schema(packet))), must_fail)


def recursive_schema_packet(depth: int) -> bytes:
    """A `ztf.alert` whose candidate is a self-referencing record, nested ``depth`` deep in the data.

    Valid Avro for a small depth; a deep one drives a recursive reader down ``depth`` C stack frames.
    """
    schema = {
        "type": "record",
        "name": "alert",
        "namespace": "ztf",
        "fields": [
            {"name": "schemavsn", "type": "string"},
            {"name": "publisher", "type": "string"},
            {"name": "objectId", "type": "string"},
            {"name": "candid", "type": "long"},
            {
                "name": "candidate",
                "type": {"type": "record", "name": "node", "fields": [{"name": "child", "type": ["null", "node"]}]},
            },
        ],
    }
    body = b"\x024\x02x\x02Z" + zigzag_varint(1) + b"\x02" * depth + b"\x00"
    return build_container(json.dumps(schema).encode(), body, bytes(range(16)), ("avro.schema", "avro.codec"))


def oversized(packet: bytes, size: int) -> Mutant:
    """A *valid* packet of about ``size`` bytes: its science stamp padded (the codec must take it; the publisher
    not)."""
    record = codec.decode(packet)
    layout = codec.container_layout(packet)
    grown = bytes(random.Random(size).randbytes(max(0, size - len(packet))))
    record["cutoutScience"] = dict(record["cutoutScience"], stampData=record["cutoutScience"]["stampData"] + grown)
    return Mutant(
        f"oversized-{size}",
        codec.encode(
            record, codec.schema_version_of(packet), sync_marker=layout.sync_marker, metadata_keys=layout.metadata_keys
        ),
        False,
    )


# ------------------------------------------------------------------------------- valid but implausible

#: name -> (field, value): values the schema takes but nothing downstream can compute with. ``candid`` and
#: ``objectId`` are top-level, the others in ``candidate``.
IMPLAUSIBLE = {
    "jd-nan": ("jd", math.nan),
    "jd-inf": ("jd", math.inf),
    "jd-minus-inf": ("jd", -math.inf),
    "jd-1e300": ("jd", 1e300),
    "jd-minus-1e300": ("jd", -1e300),
    "jd-zero": ("jd", 0.0),
    "jd-year-1858": ("jd", 2400000.5),
    "jd-year-2100": ("jd", 2488069.5),
    "candid-negative": ("candid", -5),
    "candid-zero": ("candid", 0),
    "candid-min": ("candid", -(1 << 63)),
    "pid-negative": ("pid", -1),
    "pid-zero": ("pid", 0),
    "programid-99": ("programid", 99),
    "programid-negative": ("programid", -1),
    "programid-max": ("programid", (1 << 31) - 1),
    "objectId-empty": ("objectId", ""),
    "objectId-newline": ("objectId", "ZTF23\nabcdef"),
    "objectId-nul": ("objectId", "ZTF23\x00bcdef"),
    "objectId-space": ("objectId", "ZTF23 bcdef"),
    "objectId-unicode": ("objectId", "ZTF23\u00e9bcdef"),
    "objectId-long": ("objectId", "Z" * 4096),
}

#: File or member names (as bytes: a name need not be UTF-8) that a rejection must carry safely.
ODD_NAMES = (
    b"\xff\xfe.avro",
    b"latin1-\xe9t\xe9.avro",
    b"new\nline.avro",
    b"tab\tand\rcr.avro",
    b" leading-space.avro",
    b"-rf.avro",
    b"%s%n%x.avro",
    b"${jndi:ldap:x}.avro",
    b"'; DROP TABLE alerts; --.avro",
    b"\xe2\x80\xae.ovra.avro",  # a right-to-left override
    b"x" * 240 + b".avro",
)


def implausible(packet: bytes, which: str) -> Mutant:
    """The packet with one field set to an implausible value (`IMPLAUSIBLE`), re-encoded in its own layout."""
    field, value = IMPLAUSIBLE[which]
    record = codec.decode(packet)
    (record if field in ("candid", "objectId") else record["candidate"])[field] = value
    layout = codec.container_layout(packet)
    rebuilt = codec.rebuild(record, packet[: layout.header_end], layout.sync_marker)
    return Mutant(f"implausible-{which}", rebuilt, False, implausible=True)


# ----------------------------------------------------------------------------------- one random mutation


def random_mutant(packet: bytes, rng: random.Random) -> Mutant:
    """One mutation of ``packet`` of a kind drawn at random (for long fuzz runs without hypothesis)."""
    kind = rng.randrange(8)
    if kind == 0:
        return truncate(packet, rng.randrange(len(packet)))
    if kind == 1:
        return flip_bits(packet, [rng.randrange(len(packet) * 8) for _ in range(rng.randint(1, 8))])
    if kind == 2:
        return splice(packet, rng.randrange(len(packet)), rng.randbytes(rng.randint(0, 64)), rng.randint(0, 64))
    if kind == 3:
        return crafted_header_length(
            packet, rng.choice(["schema-length", "block-size", "block-count"]), rng.choice(CRAFTED_LENGTHS)
        )
    if kind == 4:
        return crafted_body_length(packet, rng.choice(list(BODY_LENGTHS)), rng.choice(CRAFTED_LENGTHS))
    if kind == 5:
        return wrong_schema(packet, rng.choice([k for k in WRONG_SCHEMAS if k != "deeply-nested"]))
    if kind == 6:
        return Mutant("random-bytes", rng.randbytes(rng.randint(0, 4096)), True)
    return Mutant("magic-then-random", MAGIC + rng.randbytes(rng.randint(0, 4096)), True)
