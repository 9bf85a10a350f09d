"""The alert codec against ZTF's own packets (3.0, 3.3, 4.01) and against every kind of bad input."""

from __future__ import annotations

import copy
import io
import json
import random
import tarfile
import time
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from tasks import codec
from tasks.avro_container import SYNC_SIZE, _read_long, build_container, parse_container, zigzag_varint
from tasks.codec import AlertPacketError, decode, encode, peek

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARCHIVE = DATA / "ztf-archive" / "ztf_public_20180819_mod1000.tar.gz"


def _load_real_packets() -> dict[str, bytes]:
    """Every real packet by a readable id: 29 single files and the 30 members of the 3.0 archive tarball."""
    if not DATA.is_dir():
        return {}
    packets = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(DATA.glob("ztf-alerts/*/*.avro"))}
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                packets[f"archive/{member.name}"] = tar.extractfile(member).read()
    return packets


PACKETS = _load_real_packets()
_MISSING = f"../shared/data not found: expected real ZTF packets at {DATA}"
PACKET_IDS = sorted(PACKETS) or [pytest.param("-", marks=pytest.mark.skip(reason=_MISSING))]


def _packets_of(version: str) -> list[bytes]:
    if not PACKETS:
        pytest.skip(_MISSING)
    found = [p for p in PACKETS.values() if next(fastavro.reader(io.BytesIO(p)))["schemavsn"] == version]
    assert found, f"no real packet of schema {version}"
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
    if not PACKETS:
        pytest.skip(_MISSING)
    return min(PACKETS.values(), key=len)


@pytest.fixture(scope="module")
def packet_401() -> bytes:
    return _packets_of("4.01")[0]


def test_real_data_is_all_there():
    if not PACKETS:
        pytest.skip(_MISSING)
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
    for fields in (["candidate"], ["objectId", "candid", "candidate"], ["prv_candidates", "schemavsn"],
                   ["cutoutDifference"], ["candid", "fp_hists"], []):
        got = decode(packet, fields)
        assert list(got) == fields
        assert got == {f: full.get(f) for f in fields}  # fp_hists: None in 3.x packets


@pytest.mark.parametrize("name", PACKET_IDS)
def test_peek_agrees_with_full_decode(name):
    packet = PACKETS[name]
    full = _reference(packet)
    info = peek(packet)
    assert info == codec.PacketInfo(
        schemavsn=full["schemavsn"], objectId=full["objectId"], candid=full["candid"],
        programid=full["candidate"]["programid"], jd=full["candidate"]["jd"], pid=full["candidate"]["pid"],
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
    assert _read_long(encoded + b"rest", 0, "test") == (value, len(encoded))


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
        try:
            reader(packet)
        except AlertPacketError:
            pass


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
    with pytest.raises(AlertPacketError, match="expected a ztf.alert record"):
        encode([record], "4.01")
