"""Bad input, swept: every malformed packet is refused with a reason, never a crash, a hang or a memory blow-up.

Property-based (hypothesis, bounded for CI) over the codec and the publisher, with mutations made from real and
simulated packets (bench/fuzz_cases.py): truncations, bit flips, spliced junk, impossible lengths and counts in
the container header and inside the Avro record, wrong schemas, oversized packets. `bench/fuzz.py` runs the same
mutations for longer (atheris when installed).
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import functools
import subprocess
import sys
import time
import tracemalloc
import uuid

import pytest
from confluent_kafka import TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from alertdist.avro import codec
from alertdist.avro.container import MAGIC
from alertdist.kafka.clients import admin_client, consumer
from alertdist.nights.state import end_offsets
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import HEADER_REASON, HEADER_SOURCE, REJECT_KINDS, publish
from alertdist.publish.sources import SourcePacket, simulated_packets
from bench import fuzz_cases as fc
from tests.conftest import ARCHIVE_2018, REPO, SHARED_DATA

NIGHT = dt.date(2023, 10, 12)
SECONDS_PER_CALL = 2.0  # a real packet decodes in ~1 ms; anything near this is a near-hang
PEAK_BYTES = 48 * 1024 * 1024  # tracemalloc peak allowed per call on packets of < 200 KB
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@functools.cache
def _pool() -> tuple[bytes, ...]:
    """Good packets of every schema version: simulated 4.02 always, ZTF's real 4.01, 3.3 and 3.0 when present."""
    packets = [p.packet for p in simulated_packets(4, night=NIGHT, seed=11)]
    if SHARED_DATA.is_dir():
        import tarfile

        for folder in ("20231012", "20200202"):
            packets += [p.read_bytes() for p in sorted((SHARED_DATA / "ztf-alerts" / folder).glob("*.avro"))[:2]]
        with tarfile.open(ARCHIVE_2018) as tar:
            packets += [tar.extractfile(m).read() for m in list(tar)[:2] if m.isfile()]
    return tuple(packets)


@pytest.fixture(autouse=True)
def _no_hang():
    """A hang inside C code cannot be interrupted: dump every thread's stack and end the run loudly instead."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---------------------------------------------------------------------------------------------- strategies

base_packets = st.integers(min_value=0).map(lambda i: _pool()[i % len(_pool())])


@st.composite
def mutants(draw) -> fc.Mutant:
    packet = draw(base_packets)
    kind = draw(
        st.sampled_from(["truncate", "flip", "splice", "header", "body", "schema", "random", "magic", "implausible"])
    )
    if kind == "implausible":
        return fc.implausible(packet, draw(st.sampled_from(sorted(fc.IMPLAUSIBLE))))
    if kind == "truncate":
        return fc.truncate(packet, draw(st.integers(0, len(packet) - 1)))
    if kind == "flip":
        return fc.flip_bits(packet, draw(st.lists(st.integers(0, len(packet) * 8 - 1), min_size=1, max_size=8)))
    if kind == "splice":
        return fc.splice(
            packet, draw(st.integers(0, len(packet))), draw(st.binary(max_size=64)), draw(st.integers(0, 64))
        )
    if kind == "header":
        return fc.crafted_header_length(
            packet,
            draw(st.sampled_from(["schema-length", "block-size", "block-count"])),
            draw(st.sampled_from(fc.CRAFTED_LENGTHS)),
        )
    if kind == "body":
        return fc.crafted_body_length(
            packet, draw(st.sampled_from(sorted(fc.BODY_LENGTHS))), draw(st.sampled_from(fc.CRAFTED_LENGTHS))
        )
    if kind == "schema":
        return fc.wrong_schema(packet, draw(st.sampled_from(sorted(fc.WRONG_SCHEMAS))))
    if kind == "random":
        return fc.Mutant("random-bytes", draw(st.binary(max_size=4096)), True)
    return fc.Mutant("magic-then-random", MAGIC + draw(st.binary(max_size=4096)), True)


# ------------------------------------------------------------------------------------------------- codec


def _outcome(call, packet: bytes) -> tuple[str, str, float, int]:
    """("ok" | "refused", reason, seconds, peak traced bytes); any other exception propagates and fails the test."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call(packet)
        outcome, reason = "ok", ""
    except codec.AlertPacketError as e:
        outcome, reason = "refused", str(e)
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return outcome, reason, elapsed, peak


CALLS = {
    "decode": codec.decode,
    "peek": codec.peek,
    "projection": lambda p: codec.decode(p, ["objectId", "candid", "candidate"]),
    "plausibility": lambda p: codec.info_problem(codec.peek(p)),  # whatever peek lets through, it judges
}


@FUZZ
@given(mutant=mutants())
def test_every_mutant_decodes_or_is_refused_with_a_reason_quickly_and_in_bounded_memory(mutant):
    for name, call in CALLS.items():
        outcome, reason, elapsed, peak = _outcome(call, mutant.packet)
        assert elapsed < SECONDS_PER_CALL, f"{name} of {mutant.kind} took {elapsed:.2f} s"
        assert peak < PEAK_BYTES, f"{name} of {mutant.kind} traced a peak of {peak / 1e6:.0f} MB"
        if outcome == "refused":
            assert len(reason) > 20, f"{name} of {mutant.kind}: reason too thin: {reason!r}"
        if name == "decode" and mutant.must_fail:
            assert outcome == "refused", f"decode accepted {mutant.kind}, which cannot be a valid packet"
        if mutant.peek_must_fail:
            assert outcome == "refused", f"{name} accepted {mutant.kind}, broken before the end of `candidate`"
    if mutant.implausible:
        assert codec.info_problem(codec.peek(mutant.packet)) is not None, f"{mutant.kind} passed as plausible"


@pytest.mark.parametrize("where", ["schema-length", "block-size", "block-count"])
@pytest.mark.parametrize("value", fc.CRAFTED_LENGTHS)
def test_impossible_lengths_in_the_header_are_refused_before_anything_is_allocated(where, value):
    for packet in _pool():
        mutant = fc.crafted_header_length(packet, where, value)
        for name, call in CALLS.items():
            outcome, reason, _, peak = _outcome(call, mutant.packet)
            assert outcome == "refused" and peak < 1024 * 1024, (name, reason, peak)
            assert "byte" in reason  # says where


@pytest.mark.parametrize("where", sorted(fc.BODY_LENGTHS))
@pytest.mark.parametrize("value", [v for v in fc.CRAFTED_LENGTHS if abs(v) >= 1 << 31])
def test_impossible_lengths_counts_and_branches_inside_the_record_are_refused(where, value):
    for packet in _pool():
        mutant = fc.crafted_body_length(packet, where, value)
        outcome, reason, elapsed, peak = _outcome(codec.decode, mutant.packet)
        assert outcome == "refused", f"{mutant.kind} decoded"
        assert "ztf.alert record" in reason and elapsed < SECONDS_PER_CALL and peak < PEAK_BYTES, (reason, peak)


@pytest.mark.parametrize("which", sorted(fc.WRONG_SCHEMAS))
def test_wrong_schemas_are_refused_or_decoded_never_anything_else(which):
    for packet in _pool():
        mutant = fc.wrong_schema(packet, which)
        outcome, reason, elapsed, peak = _outcome(codec.decode, mutant.packet)
        assert elapsed < SECONDS_PER_CALL and peak < PEAK_BYTES + 8 * len(mutant.packet)
        if mutant.must_fail:
            assert outcome == "refused" and ("schema" in reason or "ztf.alert" in reason), reason


def test_an_oversized_valid_packet_still_decodes_with_memory_in_proportion():
    mutant = fc.oversized(_pool()[0], 12 * 1024 * 1024)
    outcome, _, elapsed, peak = _outcome(codec.decode, mutant.packet)
    assert outcome == "ok" and elapsed < 5 * SECONDS_PER_CALL
    assert peak < 3 * len(mutant.packet)


def test_a_recursive_schema_with_deeply_nested_data_is_refused_not_a_crash():
    """A crash would take the publisher down on every restart while the file stays in the drop folder."""
    shallow = fc.recursive_schema_packet(10)
    assert _outcome(codec.decode, shallow)[0] in ("ok", "refused")
    script = (
        "import sys; from alertdist.avro import codec; from bench.fuzz_cases import recursive_schema_packet\n"
        "try:\n    codec.peek(recursive_schema_packet(100_000))\nexcept codec.AlertPacketError as e:\n"
        "    print('refused:', e)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the decoding process died with {run.returncode}: {run.stderr[-500:]}"
    assert run.stdout.startswith("refused:")


# ------------------------------------------------------------------------------------------------ publisher


def _read_topics(bootstrap: str, topics: list[str]) -> list:
    ends = end_offsets(bootstrap, topics)
    wanted = {(t, p): high for t, parts in ends.items() for p, high in parts.items() if high > 0}
    c = consumer(bootstrap)
    messages = []
    try:
        if wanted:
            c.assign([TopicPartition(t, p, 0) for t, p in wanted])
        deadline = time.monotonic() + 60
        while len(messages) < sum(wanted.values()) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        c.close()
    assert len(messages) == sum(wanted.values()), "could not read every message back"
    return messages


@functools.cache
def _night_packets() -> tuple[bytes, ...]:
    return tuple(p.packet for p in simulated_packets(12, night=NIGHT, seed=3))


# no shrinking: each example is a whole night through Kafka, and shrinking a failure would take many minutes
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=st.lists(st.tuples(st.integers(0, 11), st.booleans(), st.integers(0, 2**32)), min_size=8, max_size=30))
def test_the_publisher_sets_aside_every_bad_packet_with_a_reason_and_counts_reconcile(kafka_bootstrap, plan):
    import random

    naming = TopicNaming(survey=f"fz{uuid.uuid4().hex[:10]}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=2))
    items, expected_refused = [], set()
    for i, (which, mutate, seed) in enumerate(plan):
        packet = _night_packets()[which]
        if mutate:
            mutant = fc.random_mutant(packet, random.Random(seed)) if seed % 7 else fc.oversized(packet, 400_000)
            name, packet = f"{i:03d}-{mutant.name}", mutant.packet
            if mutant.must_fail or mutant.kind.startswith("oversized"):
                expected_refused.add(name)
        else:
            name = f"{i:03d}-good.avro"
        items.append(SourcePacket(name, packet, None))

    result = publish(
        items,
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
        max_packet_bytes=300_000,
        flush_timeout_s=60,
        full_check=True,
    )

    assert result.read == len(items) == result.delivered_total + result.rejected_total
    assert result.closed and result.failed == 0
    programme_topics = list(naming.programme_topics(NIGHT).values())
    rejected = {
        dict(m.headers())[HEADER_SOURCE].decode(): m
        for m in _read_topics(kafka_bootstrap, [naming.rejected_topic(NIGHT)])
    }
    assert len(rejected) == result.rejected_total
    assert expected_refused <= set(rejected)
    for msg in rejected.values():
        reason = dict(msg.headers())[HEADER_REASON].decode()
        kind = reason.split(":", 1)[0]
        assert kind in REJECT_KINDS and len(reason) > len(kind) + 10, reason
    published = _read_topics(kafka_bootstrap, programme_topics)
    by_name = {i.name: i.packet for i in items}
    assert sorted(m.value() for m in published) == sorted(p for n, p in by_name.items() if n not in rejected)
    for msg in published:
        assert codec.peek(msg.value()).programid == naming.programid_of(msg.topic())


def test_with_full_check_a_packet_broken_after_its_candidate_is_set_aside_too(kafka_bootstrap, unique):
    """By default the publisher checks through `candidate` only (trusted pipeline); `full_check` is for the rest."""
    naming = TopicNaming(survey=f"fc{unique}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=1))
    good = _night_packets()[0]
    broken = fc.crafted_body_length(good, "prv_candidates-count", 1 << 60)
    assert _outcome(codec.peek, broken.packet)[0] == "ok" and _outcome(codec.decode, broken.packet)[0] == "refused"
    result = publish(
        [SourcePacket("good.avro", good, None), SourcePacket("broken.avro", broken.packet, None)],
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
        full_check=True,
    )
    assert result.read == 2 and result.delivered_total == 1 and result.rejected == {"malformed": 1}
