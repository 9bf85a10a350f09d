"""No packet can stop a night, without Kafka: the one plausibility rule, the night of any jd, the batch filter."""

from __future__ import annotations

import datetime as dt
import math
import tarfile

import pytest

from alertdist.avro import codec
from alertdist.filters.batch import run_batch
from alertdist.nights.dates import SITES, night_of_jd
from alertdist.publish.sources import simulated_packets

NIGHT = dt.date(2023, 10, 12)
EVERY_ALERT = "tests.test_plausible:every_alert"


def every_alert(alert: dict) -> bool:
    """A filter that passes everything it is shown: what reaches it is what the batch path let through."""
    return True


def mutated(packet: bytes, **changes) -> bytes:
    """The packet re-encoded with top-level (objectId, candid) or candidate (jd, pid, programid) values changed."""
    record = codec.decode(packet)
    for name, value in changes.items():
        (record if name in ("objectId", "candid") else record["candidate"])[name] = value
    return codec.encode(record, record["schemavsn"])


HOSTILE = {
    "nan-jd": {"jd": math.nan},
    "huge-jd": {"jd": 1e300},
    "infinite-jd": {"jd": -math.inf},
    "ancient-jd": {"jd": 2400000.5},
    "negative-candid": {"candid": -5},
    "zero-pid": {"pid": 0},
    "programid-99": {"programid": 99},
    "newline-objectId": {"objectId": "ZTF23\nabcdef"},
    "long-objectId": {"objectId": "Z" * 5000},
    "empty-objectId": {"objectId": ""},
}


@pytest.fixture(scope="module")
def good() -> list[bytes]:
    return [item.packet for item in simulated_packets(12, night=NIGHT, seed=21)]


def test_real_and_simulated_packets_are_plausible(good, real_packets):
    for packet in [*good, *real_packets]:
        assert codec.info_problem(codec.peek(packet)) is None


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_implausible_field_is_named_in_one_line(good, case):
    info = codec.peek(mutated(good[0], **HOSTILE[case]))
    problem = codec.info_problem(info)
    assert problem is not None and "\n" not in problem and len(problem) < 200, problem
    field = next(iter(HOSTILE[case]))
    assert field in problem


def test_a_deployment_names_its_own_programmes(good):
    info = codec.peek(mutated(good[0], programid=4))
    assert "programid" in codec.info_problem(info)
    assert codec.info_problem(info, programids=[1, 2, 3, 4]) is None


@pytest.mark.parametrize("jd", [math.nan, math.inf, 1e300, -1e300])
def test_night_of_jd_refuses_a_jd_without_a_date_with_a_value_error(jd):
    with pytest.raises(ValueError, match="not a date"):
        night_of_jd(jd, SITES["palomar"])


def test_the_batch_filter_counts_implausible_packets_as_malformed_and_goes_on(good, tmp_path):
    hostile = [(case, mutated(good[i], **changes)) for i, (case, changes) in enumerate(sorted(HOSTILE.items()))]
    packets = [(f"good{i}", p) for i, p in enumerate(good)] + hostile
    result = run_batch(EVERY_ALERT, packets)
    assert result.read == len(packets) and result.passed == len(good) and result.malformed == len(hostile)
    assert {name for name, outcome, _ in result.problems} == {case for case, _ in hostile}
    assert all(reason.startswith("implausible: ") for _, _, reason in result.problems)
    assert result.table["candid"].null_count == 0  # no passing row without its identity


def test_the_batch_filter_reads_no_tar_member_whole_past_the_packet_limit(good, tmp_path):
    tarball = tmp_path / "night.tar"
    with tarfile.open(tarball, "w") as tar:
        for name, data in [("1.avro", good[0]), ("big.avro", good[1] + bytes(11 * 1024 * 1024)), ("README", b"hi")]:
            (tmp_path / name).write_bytes(data)
            tar.add(tmp_path / name, arcname=name)
    result = run_batch(EVERY_ALERT, tarball)
    assert (result.read, result.passed, result.malformed) == (3, 1, 2)
    reasons = {name: reason for name, _, reason in result.problems}
    assert reasons["big.avro"].startswith("oversize: ") and reasons["README"].startswith("not-a-packet: ")


def test_reading_an_archived_tarball_counts_an_implausible_member_as_bad(good, tmp_path):
    from alertdist.access.readers import ReadCounts, tarball_alerts

    tarball = tmp_path / "night.tar"
    with tarfile.open(tarball, "w") as tar:
        for name, data in [("1.avro", good[0]), ("2.avro", mutated(good[1], jd=math.nan)), ("3.avro", good[2])]:
            (tmp_path / name).write_bytes(data)
            tar.add(tmp_path / name, arcname=name)
    counts = ReadCounts(str(tarball))
    assert [a.name for a in tarball_alerts(str(tarball), counts=counts)] == ["1.avro", "3.avro"]
    assert (counts.good, counts.bad) == (2, 1) and counts.bad_members[0][1].startswith("implausible: candidate.jd")
