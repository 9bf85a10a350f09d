"""The project's own packets of every shipped schema version: what a fresh clone tests with (no ../shared).

Each schema folder carries a sample packet written by the simulator in that version; the tests draw more from the
same function (`alertdist.simulate.samples`), so the committed files must be exactly what it makes today.
"""

from __future__ import annotations

import io

import fastavro
import pytest
from fastavro.validation import validate

from alertdist import schemas
from alertdist.avro import codec
from alertdist.simulate.samples import sample_alerts, sample_night, sample_path
from tests.conftest import MADE_PER_VERSION, TARBALL_VERSION, made_packets


@pytest.mark.parametrize("version", schemas.available_versions())
def test_each_shipped_version_has_a_current_sample_packet_of_its_own_version(version):
    path = sample_path(version)
    assert path.is_file(), f"{path} missing: run `python -m alertdist.simulate.samples`"
    packet = path.read_bytes()
    assert packet == sample_alerts(version)[0].packet, f"{path} is stale: run `python -m alertdist.simulate.samples`"
    reader = fastavro.reader(io.BytesIO(packet))  # plain fastavro, as any consumer reads it
    records = list(reader)
    assert len(records) == 1 and records[0]["schemavsn"] == version
    assert codec.writer_schema(packet) == schemas.load_schema(version)
    assert validate(records[0], schemas.load_schema(version), raise_errors=True)
    assert codec.decode(packet) == records[0]


def test_made_packets_cover_every_version_in_nights_of_their_own():
    packets = made_packets()
    heads = [codec.peek(p) for p in packets]
    versions = [h.schemavsn for h in heads]
    expected = dict.fromkeys(schemas.available_versions(), MADE_PER_VERSION) | {TARBALL_VERSION: 30}
    assert {v: versions.count(v) for v in set(versions)} == expected
    assert {h.programid for h in heads} == {1}  # public alerts, as ZTF's shared ones
    assert len({h.candid for h in heads}) == len(packets)  # candids never collide across versions
    assert len({sample_night(v) for v in schemas.available_versions()}) == len(schemas.available_versions())
    assert all("fp_hists" not in codec.decode(p) for p, v in zip(packets, versions) if v.startswith("3."))
