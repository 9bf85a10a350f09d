"""The alert codec against ZTF's own packets (3.0, 3.3, 4.01) and against every kind of bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import tarfile
import time
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

import fastavro
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertdist import schemas
from alertdist.avro import codec, writer_schemas
from alertdist.avro.codec import AlertPacketError, decode, encode, peek
from alertdist.avro.container import SYNC_SIZE, build_container, parse_container, read_long, zigzag_varint
from alertdist.avro.encoder import compile_body_encoder
from tests.conftest import ARCHIVE_2018, have_real_data, made_packets, require_real_data


def _load_packets() -> dict[str, bytes]:
    """Every packet by a readable id: ZTF's 29 single files and the 30 members of the 3.0 archive tarball when
    ../shared is there, else the project's own packets of every shipped schema version."""
    if not have_real_data():
        return {f"made/{peek(p).schemavsn}/{peek(p).candid}": p for p in made_packets()}
    data = ARCHIVE_2018.parents[1]
    packets = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(data.glob("ztf-alerts/*/*.avro"))}
    with tarfile.open(ARCHIVE_2018, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                packets[f"archive/{member.name}"] = tar.extractfile(member).read()
    return packets


PACKETS = _load_packets()
PACKET_IDS = sorted(PACKETS)


def _packets_of(version: str) -> list[bytes]:
    found = [p for p in PACKETS.values() if next(fastavro.reader(io.BytesIO(p)))["schemavsn"] == version]
    assert found, f"no packet of schema {version}"
    return found


def _reference(packet: bytes) -> dict:
    """What every ZTF consumer does today."""
    return next(fastavro.reader(io.BytesIO(packet)))


def _raises(packet: bytes, *words: str, fields=None) -> str:
    with pytest.raises(AlertPacketError) as info:
        decode(packet, fields)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in error message {message!r}"
    return message


@pytest.fixture(scope="module")
def small_packet() -> bytes:
    return min(PACKETS.values(), key=len)


@pytest.fixture(scope="module")
def packet_401() -> bytes:
    """The first 4.01 packet with a history of detections and non-detections (every field type filled)."""
    return next(p for p in _packets_of("4.01") if len({e["candid"] is None for e in decode(p)["prv_candidates"]}) == 2)


def test_real_data_is_all_there():
    require_real_data("counts ZTF's own packets in ../shared")
    assert len(PACKETS) == 59
    versions = sorted(_reference(p)["schemavsn"] for p in PACKETS.values())
    assert {v: versions.count(v) for v in set(versions)} == {"3.0": 30, "3.3": 5, "4.01": 24}


# ------------------------------------------------------------------------------------------ real packets


@pytest.mark.parametrize("name", PACKET_IDS)
def test_decode_equals_fastavro_reader(name):
    packet = PACKETS[name]
    assert decode(packet) == _reference(packet)


@pytest.mark.parametrize("name", PACKET_IDS)
def test_reencode_with_own_version_and_sync_marker_is_byte_exact(name):
    packet = PACKETS[name]
    record = decode(packet)
    layout = codec.container_layout(packet)
    assert layout.sync_marker == packet[-SYNC_SIZE:]
    again = encode(record, record["schemavsn"], sync_marker=packet[-SYNC_SIZE:], metadata_keys=layout.metadata_keys)
    assert again == packet


@pytest.mark.parametrize("name", PACKET_IDS)
def test_projection_returns_exactly_the_named_fields(name):
    packet = PACKETS[name]
    full = _reference(packet)
    for fields in (
        ["candidate"],
        ["objectId", "candid", "candidate"],
        ["prv_candidates", "schemavsn"],
        ["cutoutDifference"],
        ["candid", "fp_hists"],
        [],
    ):
        got = decode(packet, fields)
        assert list(got) == fields
        assert got == {f: full.get(f) for f in fields}  # fp_hists: None in 3.x packets


@pytest.mark.parametrize("name", PACKET_IDS)
def test_peek_agrees_with_full_decode(name):
    packet = PACKETS[name]
    full = _reference(packet)
    info = peek(packet)
    assert info == codec.PacketInfo(
        schemavsn=full["schemavsn"],
        objectId=full["objectId"],
        candid=full["candid"],
        programid=full["candidate"]["programid"],
        jd=full["candidate"]["jd"],
        pid=full["candidate"]["pid"],
        size=len(packet),
    )
    assert codec.schema_version_of(packet) == full["schemavsn"]


@pytest.mark.parametrize("version", ["3.0", "3.3", "4.01", "4.02"])
def test_round_trip_every_version(version):
    source = "4.01" if version == "4.02" else version
    for packet in _packets_of(source)[:3]:
        record = copy.deepcopy(decode(packet))
        record["schemavsn"] = version
        encoded = encode(record, version)
        assert decode(encoded) == record == _reference(encoded)
        assert encoded == encode(record, version), "same record must give the same bytes"
        assert schemas.load_schema_text(version).encode() in encoded
        assert codec.writer_schema(encoded) == schemas.load_schema(version)
        assert codec.schema_version_of(encoded) == version


def test_default_sync_marker_depends_on_candid(packet_401):
    record = decode(packet_401)
    other = dict(record, candid=record["candid"] + 1)
    assert encode(record, "4.01")[-SYNC_SIZE:] != encode(other, "4.01")[-SYNC_SIZE:]


def test_encode_may_omit_nullable_fields(packet_401):
    record = decode(packet_401)
    del record["fp_hists"], record["cutoutTemplate"]
    back = decode(encode(record, "4.01"))
    assert back["fp_hists"] is None and back["cutoutTemplate"] is None


def test_decoding_reuses_the_cached_schema(packet_401, monkeypatch):
    packets = _packets_of("4.01")
    decode(packet_401), decode(packet_401, ["candidate"]), peek(packet_401)  # warm the cache

    def refuse(*args, **kwargs):
        raise AssertionError("the writer schema was parsed again")

    monkeypatch.setattr(fastavro, "parse_schema", refuse)
    monkeypatch.setattr(json, "loads", refuse)
    for packet in packets:
        decode(packet), decode(packet, ["candidate"]), peek(packet)


def test_required_fields_are_the_non_nullable_ones_of_every_version():
    def nullable(field):
        return isinstance(field["type"], list) and "null" in field["type"]

    required = {
        f["name"] for v in schemas.available_versions() for f in schemas.load_schema(v)["fields"] if not nullable(f)
    }
    assert required == set(codec.REQUIRED_FIELDS)


# --------------------------------------------------------------------------------------------- projection


def test_projection_of_an_unknown_field_names_it(packet_401):
    message = _raises(packet_401, "'candidat'", "unknown", fields=["candidat", "candid"])
    assert "'candid'" not in message


def test_projection_wants_names_not_a_string(packet_401):
    with pytest.raises(TypeError):
        decode(packet_401, "candidate")


def test_projection_does_not_read_history_or_cutouts(packet_401):
    """Break the record after `candidate`: the projection still works, the full decode must not."""
    container = parse_container(packet_401)
    schema_text = packet_401[container.schema_start : container.schema_end]
    through_candidate = decode(packet_401, ["schemavsn", "publisher", "objectId", "candid", "candidate"])
    prefix = io.BytesIO()
    fastavro.schemaless_writer(prefix, _prefix_schema(schema_text, 5), through_candidate)
    body = prefix.getvalue() + b"\x08"  # branch 4 of prv_candidates' ["null", array] union: out of range
    broken = build_container(schema_text, body, container.sync_marker, container.metadata_keys)
    assert decode(broken, ["candidate"])["candidate"] == through_candidate["candidate"]
    assert peek(broken).candid == through_candidate["candid"]
    _raises(broken, "cannot decode", "block at bytes")


def _prefix_schema(schema_text: bytes, n_fields: int) -> dict:
    doc = json.loads(schema_text)
    doc["fields"] = doc["fields"][:n_fields]
    return fastavro.parse_schema(doc)


# -------------------------------------------------------------------------------------------- bad packets


def _ocf(schema: dict, records: list, codec_name: str = "null") -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, schema, records, codec=codec_name, sync_interval=1 << 24)  # all records in one block
    return out.getvalue()


def test_empty_bytes():
    _raises(b"", "too short")


def test_random_bytes():
    _raises(random.Random(7).randbytes(5000), "magic")


def test_json_text():
    _raises(b'{"schemavsn": "4.01", "objectId": "ZTF23abjjnqm"}', "magic")
    _raises('{"schemavsn": "4.01"}', "must be bytes")


def test_a_record_other_than_ztf_alert():
    other = {"type": "record", "name": "other.thing", "fields": [{"name": "candid", "type": "long"}]}
    _raises(_ocf(other, [{"candid": 1}]), "'other.thing'", "ztf.alert")


def test_zero_records():
    _raises(_ocf(schemas.load_schema("4.01"), []), "zero records")


def test_several_records_in_one_block(packet_401):
    record = decode(packet_401)
    _raises(_ocf(schemas.load_schema("4.01"), [record, record]), "holds 2 records")


def test_a_second_block(packet_401):
    container = parse_container(packet_401)
    body = packet_401[container.body_start : container.body_end]
    second = zigzag_varint(1) + zigzag_varint(len(body)) + body + container.sync_marker
    _raises(packet_401 + second, "second block")


def test_a_required_field_missing_from_the_writer_schema(packet_401):
    schema = schemas.load_schema("4.01")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "candid"]
    record = decode(packet_401)
    del record["candid"]
    _raises(_ocf(schema, [record]), "lacks required field", "candid")


@pytest.mark.parametrize("codec_name", ["deflate", "snappy", "zstandard"])
def test_compressed_packets_are_refused(small_packet, codec_name):
    assert b"\x14avro.codec\x08null" in small_packet
    entry = b"\x14avro.codec" + zigzag_varint(len(codec_name)) + codec_name.encode()
    _raises(small_packet.replace(b"\x14avro.codec\x08null", entry, 1), "unsupported codec", codec_name)


def test_wrong_trailing_sync_marker(small_packet):
    _raises(small_packet[:-1] + bytes([small_packet[-1] ^ 1]), "sync marker")


def test_block_size_larger_than_the_record(small_packet):
    container = parse_container(small_packet)
    body = small_packet[container.body_start : container.body_end] + b"\x00"
    schema_text = small_packet[container.schema_start : container.schema_end]
    padded = build_container(schema_text, body, container.sync_marker, container.metadata_keys)
    _raises(padded, "ends at byte", "declares")


def test_header_varint_guards():
    _raises(b"Obj\x01" + b"\xff" * 12, "varint longer than")
    _raises(b"Obj\x01\x02\x01", "negative length")  # one map entry whose key length is -1
    _raises(b"Obj\x01\x02" + zigzag_varint(1 << 40), "exceeds")  # key length far beyond the packet
    _raises(b"Obj\x01\x02\x16avro.schema" + zigzag_varint(1 << 62), "exceeds")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_varints_round_trip(value):
    encoded = zigzag_varint(value)
    assert read_long(encoded + b"rest", 0, "test") == (value, len(encoded))


def test_writer_schema_not_json():
    packet = build_container(b"{not json", b"", b"s" * SYNC_SIZE, ("avro.schema",))
    _raises(packet, "not JSON")


def test_array_of_zero_byte_items_is_refused(packet_401):
    """Such an array with a huge count would make any reader spin without consuming input."""
    schema = schemas.load_schema("4.01")
    schema["fields"].append({"name": "spin", "type": {"type": "array", "items": "null"}})
    record = dict(decode(packet_401), spin=[None, None])
    _raises(_ocf(schema, [record]), "zero-byte")


def test_every_truncation_raises(small_packet):
    started = time.perf_counter()
    for end in range(len(small_packet)):
        with pytest.raises(AlertPacketError):
            decode(small_packet[:end])
    assert time.perf_counter() - started < 10


def test_truncation_raises_for_peek_and_projection_too(packet_401):
    for end in range(0, len(packet_401), 97):
        with pytest.raises(AlertPacketError):
            peek(packet_401[:end])
        with pytest.raises(AlertPacketError):
            decode(packet_401[:end], ["candidate"])


_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes_always_raise_alert_packet_error(data):
    with pytest.raises(AlertPacketError):
        decode(data)


@_FUZZ
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_a_flipped_bit_decodes_or_raises_alert_packet_error(packet_401, position, bit):
    position %= len(packet_401)
    flipped = bytearray(packet_401)
    flipped[position] ^= 1 << bit
    for fields in (None, ["candidate"]):
        try:
            result = decode(bytes(flipped), fields)
        except AlertPacketError:
            continue
        assert isinstance(result, dict)


@_FUZZ
@given(body=st.binary(max_size=3000))
def test_garbage_body_in_a_valid_frame_decodes_or_raises_alert_packet_error(packet_401, body):
    container = parse_container(packet_401)
    schema_text = packet_401[container.schema_start : container.schema_end]
    packet = build_container(schema_text, body, container.sync_marker, container.metadata_keys)
    for reader in (decode, peek):
        with contextlib.suppress(AlertPacketError):
            reader(packet)


# --------------------------------------------------------------------------------------------- bad records


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r.pop("candid"), ["candid", "missing"]),
        (lambda r: r["candidate"].pop("jd"), ["candidate.jd", "missing"]),
        (lambda r: r.update(candid="abc"), ["candid", "expected long"]),
        (lambda r: r.update(candid=1.5), ["candid", "expected long"]),
        (lambda r: r.update(candid=1 << 70), ["candid", "out of range"]),
        (lambda r: r.update(objectId=5), ["objectId", "expected string"]),
        (lambda r: r["candidate"].update(magpsf="19.2"), ["candidate.magpsf", "expected float"]),
        (lambda r: r["prv_candidates"][1].update(fid=True), ["prv_candidates[1].fid", "expected int"]),
        (lambda r: r.update(cutoutScience=b"fits"), ["cutoutScience", "cutout"]),
        (lambda r: r.update(candId=1), ["unknown field", "candId"]),
        (lambda r: r.update(schemavsn="3.3"), ["schemavsn", "3.3"]),
    ],
)
def test_invalid_records_are_refused(packet_401, change, words):
    record = copy.deepcopy(decode(packet_401))
    change(record)
    with pytest.raises(AlertPacketError) as info:
        encode(record, "4.01")
    for word in words:
        assert word in str(info.value)


def test_encode_refuses_an_unknown_version_and_a_bad_sync_marker(packet_401):
    record = decode(packet_401)
    with pytest.raises(AlertPacketError, match="unknown"):
        encode(record, "9.9")
    with pytest.raises(AlertPacketError, match="16 bytes"):
        encode(record, "4.01", sync_marker=b"short")
    with pytest.raises(AlertPacketError, match=r"expected a ztf.alert record"):
        encode([record], "4.01")


# ------------------------------------------------------------------------- fast encoder vs the exact route


def _exact_route(record, version: str, sync_marker: bytes) -> bytes:
    """How encode worked before the compiled encoder: check every record, then fastavro writes the body."""
    schema = writer_schemas.shipped_schema(version)
    problem = schema.check_record(record)
    if problem is not None:
        raise AlertPacketError(problem)
    if record["schemavsn"] != version:
        raise AlertPacketError("schemavsn")
    body = io.BytesIO()
    try:
        fastavro.schemaless_writer(body, schema.parsed, record)
    except Exception as e:
        raise AlertPacketError(str(e)) from e
    return build_container(
        schemas.load_schema_text(version).encode(), body.getvalue(), sync_marker, codec.DEFAULT_METADATA_KEYS
    )


def _same_as_exact_route(record, version: str, *, lenient_floats: bool = False) -> bytes | None:
    """encode gives the exact route's bytes, or both refuse the record; returns the bytes (None if refused).

    Both with the default check and with check=False, except that with `lenient_floats` (the record's only odd
    value sits in a float field and float() takes it) check=False may write what the exact route refuses.
    """
    sync = b"s" * SYNC_SIZE
    try:
        expected = _exact_route(record, version, sync)
    except AlertPacketError:
        with pytest.raises(AlertPacketError):
            encode(record, version, sync_marker=sync)
        if not lenient_floats:
            with pytest.raises(AlertPacketError):
                encode(record, version, sync_marker=sync, check=False)
        return None
    assert encode(record, version, sync_marker=sync) == expected
    assert encode(record, version, sync_marker=sync, check=False) == expected
    return expected


@pytest.mark.parametrize("name", PACKET_IDS)
def test_real_records_take_the_fast_path_and_match_fastavro(name):
    record = decode(PACKETS[name])
    schema = writer_schemas.shipped_schema(record["schemavsn"])
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema.parsed, record)
    assert schema.fast_body(record) == body.getvalue()


def _values_of(avro_type, named: dict):
    """A hypothesis strategy for any valid value of a (parsed) Avro type, odd floats and extreme ints included."""
    if isinstance(avro_type, list):
        return st.one_of(*(_values_of(branch, named) for branch in avro_type))
    if isinstance(avro_type, str) and avro_type in named:
        return _values_of(named[avro_type], named)
    kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: _values_of(f["type"], named) for f in avro_type["fields"]})
    if kind == "array":
        return st.lists(_values_of(avro_type["items"], named), max_size=3)
    bits = {"int": 31, "long": 63}.get(kind)
    if bits:
        return st.integers(-(1 << bits), (1 << bits) - 1)
    if kind in ("float", "double"):  # ints are valid floats; 1e39 overflows float32 (fastavro writes inf)
        return st.floats() | st.integers(-(1 << 64), 1 << 64) | st.sampled_from([-0.0, 1e39, -1e39, 3.4e38])
    return {"string": st.text(max_size=12), "bytes": st.binary(max_size=12), "null": st.none()}[kind]


@pytest.mark.parametrize("version", ["3.0", "3.3", "4.02"])  # null-last unions in 3.x, null-first in 4.x
def test_random_valid_records_encode_as_fastavro_writes_them(version):
    schema = writer_schemas.shipped_schema(version)
    records = _values_of(schema.parsed, schema.parsed["__named_schemas"]).map(lambda r: dict(r, schemavsn=version))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(records)
    def check(record):
        assert _same_as_exact_route(record, version) is not None

    check()


_ODD_VALUES = [
    True,
    False,
    "19.2",
    b"x",
    1.5,
    2.0,
    7,
    1 << 40,
    -(1 << 70),
    None,
    np.float64(1.5),
    np.float32(2.5),
    np.int64(3),
    Decimal("1.5"),
    Fraction(1, 3),
    float("nan"),
    [],
    (),
    {},
    ("array", []),
    "null",
]


def _small_record(packet: bytes) -> dict:
    """A real record cut to two history entries and one forced-photometry entry, so thousands of variants are cheap."""
    record = copy.deepcopy(decode(packet))
    record["prv_candidates"] = [p for p in record["prv_candidates"] if p["candid"] is None][:1] + [
        p for p in record["prv_candidates"] if p["candid"] is not None
    ][:1]
    record["fp_hists"] = record["fp_hists"][:1]
    return record


_HOLDERS = [  # (record type, where one sits in a record from _small_record)
    ("ztf.alert", lambda r: r),
    ("ztf.alert.candidate", lambda r: r["candidate"]),
    ("ztf.alert.prv_candidate", lambda r: r["prv_candidates"][0]),  # a non-detection
    ("ztf.alert.prv_candidate", lambda r: r["prv_candidates"][1]),  # a detection
    ("ztf.alert.fp_hist", lambda r: r["fp_hists"][0]),
    ("ztf.alert.cutout", lambda r: r["cutoutScience"]),
]


def _one_field_per_type(schema, record_type: str) -> list[str]:
    """The first field of each distinct Avro type in a record type: every kind of slot, not all 200 fields."""
    fields = schema.parsed["__named_schemas"][record_type]["fields"]
    by_type = {json.dumps(f["type"], sort_keys=True, default=str): f["name"] for f in reversed(fields)}
    return list(by_type.values())


def _is_float_field(schema, record_type: str, field: str) -> bool:
    for f in schema.parsed["__named_schemas"][record_type]["fields"]:
        if f["name"] == field:
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            return "float" in branches or "double" in branches
    return False


def _float_takes(value: object) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


def test_every_field_type_with_every_odd_value_gets_what_the_exact_route_gives(packet_401):
    """A field of each type in each record type, set to each odd value, deleted, or given as a tuple or a read-only
    mapping: encode gives the old route's bytes or refuses as it did, and the strict fast path never accepts what
    the checker refuses. check=False gives the same, except that a float field takes whatever float() takes."""
    base = _small_record(packet_401)
    assert base["prv_candidates"][1]["candid"] is not None
    schema = writer_schemas.shipped_schema("4.01")
    refused = accepted = 0
    for where, holder_of in _HOLDERS:
        for field in [*_one_field_per_type(schema, where), "unknown"]:
            for change in [*_ODD_VALUES, "delete", "as tuple", "as mapping"]:
                record = copy.deepcopy(base)
                holder = holder_of(record)
                if change == "delete":
                    holder.pop(field, None)
                elif change == "as tuple":
                    if not isinstance(holder.get(field), list):
                        continue
                    holder[field] = tuple(holder[field])
                elif change == "as mapping":
                    if not isinstance(holder.get(field), dict):
                        continue
                    holder[field] = MappingProxyType(holder[field])
                else:
                    holder[field] = change
                if schema.fast_body(record) is not None:
                    assert schema.check_record(record) is None, (where, field, change)
                lenient = _is_float_field(schema, where, field) and _float_takes(change)
                if _same_as_exact_route(record, "4.01", lenient_floats=lenient) is None:
                    refused += 1
                else:
                    accepted += 1
    assert refused > 300 and accepted > 100  # both sides of the line were exercised


def test_small_and_large_integers_encode_as_fastavro_writes_them():
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "n",
            "fields": [{"name": "n", "type": "long"}, {"name": "i", "type": ["null", "int"]}],
        }
    )
    strict, trusting = compile_body_encoder(schema), compile_body_encoder(schema, trust_values=True)
    values = [*range(-(1 << 14), 1 << 15), *((1 << k) + d for k in range(14, 63) for d in (-1, 0)), -(1 << 63)]
    for n in [*values, *values[::-7]]:  # and back down, so trusted plans that packed small ints meet large ones
        record = {"n": n, "i": max(min(n, (1 << 31) - 1), -(1 << 31))}
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema, record)
        assert strict(record) == trusting(record) == body.getvalue(), n


def test_trusted_arrays_with_new_and_bad_entries_midway(packet_401):
    """check=False writes arrays through a loop over learned patterns: an entry of a new pattern or with a bad
    value midway must still come out as the exact route has it (or be refused like there)."""
    base = decode(packet_401)
    assert len(base["prv_candidates"]) > 10
    changes = [
        lambda e: None,
        lambda e: e.update(magpsf=17.5, sigmapsf=0.1),  # a non-detection with a magnitude: a new pattern
        lambda e: e.update(candid=None, isdiffpos=None),
        lambda e: e.update(magnr=None, sigmagnr=None, chinr=None, sharpnr=None),
        lambda e: e.update(fid=2.0),
        lambda e: e.update(nid=True),
        lambda e: e.update(magzpsci="26.1"),
        lambda e: e.update(rbversion=None),
    ]
    for change in changes:
        for where in (0, 5, -1):
            record = copy.deepcopy(base)
            change(record["prv_candidates"][where])
            _same_as_exact_route(record, "4.01")
            _same_as_exact_route(base, "4.01")  # and the learned patterns still serve the plain record


def test_trusted_encoding_writes_a_float_fields_value_as_float(packet_401):
    record = copy.deepcopy(decode(packet_401))
    record["candidate"]["magpsf"] = True
    with pytest.raises(AlertPacketError, match=r"candidate.magpsf"):
        encode(record, "4.01")
    assert decode(encode(record, "4.01", check=False))["candidate"]["magpsf"] == 1.0
    record["candidate"]["magpsf"], record["candidate"]["fid"] = 18.5, True  # an int field still refuses a bool
    with pytest.raises(AlertPacketError, match=r"candidate.fid"):
        encode(record, "4.01", check=False)


def test_numpy_values_and_other_mappings_take_the_exact_route_with_the_same_bytes(packet_401):
    record = copy.deepcopy(decode(packet_401))
    record["candidate"] = dict(record["candidate"], magpsf=np.float32(18.5), jd=np.float64(record["candidate"]["jd"]))
    record["candidate"]["fid"] = np.int64(2)
    assert writer_schemas.shipped_schema("4.01").fast_body(record) is None
    assert _same_as_exact_route(record, "4.01") is not None
    assert _same_as_exact_route(MappingProxyType(record), "4.01") is not None


def test_schemas_the_encoder_does_not_compile_fall_back_to_fastavro():
    named = {
        "type": "record",
        "name": "ztf.alert",
        "fields": [{"name": "kind", "type": {"type": "enum", "name": "k", "symbols": ["a", "b"]}}],
    }
    assert compile_body_encoder(fastavro.parse_schema(named)) is None
    linked = {
        "type": "record",
        "name": "node",
        "fields": [{"name": "value", "type": "long"}, {"name": "next", "type": ["null", "node"]}],
    }
    encoder = compile_body_encoder(fastavro.parse_schema(linked))
    chain = {"value": 1, "next": {"value": -2, "next": {"value": 1 << 40, "next": None}}}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(linked), chain)
    assert encoder(chain) == body.getvalue()
