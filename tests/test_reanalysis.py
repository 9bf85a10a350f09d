"""Reanalysis: columnar filters against their per-alert versions, on the archive's own columns.

The tables come from the archiver's decoder (`alertdist.avro.arrow_decoder.AlertDecoder`), so they have exactly the
columns a Parquet night has; the per-alert filters read the same packets through `AlertFilter.judge`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from alertdist.archive import ArchiveOptions, archive_night
from alertdist.avro.arrow import night_table_columns, packet_headers, writer_schema_of
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.avro.codec import peek
from alertdist.avro.container import parse_container
from alertdist.filters import (
    ERROR,
    MALFORMED,
    PASSED,
    FilterLookupError,
    alert_filter,
    available_filters,
    load_filter,
)
from alertdist.filters.batch import run_batch, run_columnar
from alertdist.filters.columnar import ColumnarFilterError, PacketBatches, select
from alertdist.nights.dates import parse_nights
from alertdist.nights.topics import TopicNaming
from alertdist.simulate.night import simulate_night
from tests import test_filters_live as live_support
from tests.archive_support import publish_night
from tests.conftest import have_real_data
from tests.test_filters import EXPECTED

NIGHT = dt.date(2023, 10, 12)


def archive_table(packets: list[bytes], folder: Path) -> pa.Table:
    """The rows the archiver writes to Parquet for ``packets`` (same decoder, same columns)."""
    headers = packet_headers(packets)
    decoder = AlertDecoder(night_table_columns(writer_schema_of(h) for h in headers), folder, headers=headers)
    try:
        return decoder.decode(packets, [peek(p).candid for p in packets])
    finally:
        decoder.close()


@pytest.fixture(scope="module")
def night(packets, tmp_path_factory) -> tuple[list[bytes], pa.Table]:
    """The packets of several versions (ZTF's 59 in CI: 3.0, 3.3, 4.01) and a simulated night of 1,500 (4.02), as
    packets and a table."""
    packets = packets + [a.packet for a in simulate_night(1500, night=NIGHT, seed=11)]
    return packets, archive_table(packets, tmp_path_factory.mktemp("decoder"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_columnar_twins_pass_the_same_candids_with_the_same_annotations(name, night, packets):
    first = packets
    packets, table = night
    per_alert = run_batch(name, packets)
    columnar = run_columnar(name, table)
    assert columnar.table.to_pylist() == per_alert.table.to_pylist()
    assert (columnar.read, columnar.passed, columnar.rejected) == (per_alert.read, per_alert.passed, per_alert.rejected)
    assert 0 < columnar.passed < columnar.read
    # the real alerts alone (three schema versions, nulls where a version lacks a field) agree too
    real = run_columnar(name, table.slice(0, len(first)))
    assert real.table.to_pylist() == run_batch(name, first).table.to_pylist()


def test_the_columnar_twins_are_found_by_kind():
    assert set(available_filters(columnar=True)) == set(available_filters()) == set(EXPECTED)
    for name in EXPECTED:
        columnar = load_filter(name, columnar=True)
        assert columnar.columnar and columnar.name == name and "magpsf" in columnar.columns
        assert not load_filter(name).columnar
    with pytest.raises(FilterLookupError, match="no bundled columnar filter named 'nope'"):
        load_filter("nope", columnar=True)
    with pytest.raises(FilterLookupError, match="is per-alert"):
        load_filter("alertdist.filters.bundled:bright_transients", columnar=True)
    with pytest.raises(TypeError, match="is columnar"):
        run_batch(load_filter("solar_system", columnar=True), [])


@alert_filter(name="by_candids", columnar=True, columns=("magpsf",))
def by_candids(table):
    """Passes the brightest half, as candids, annotated with the magnitude from a numpy array."""
    mag = table["magpsf"].to_numpy()
    bright = mag < np.median(mag)
    return table["candid"].to_numpy()[bright], {"mag": mag.astype(np.float64).round(2)}


@alert_filter(name="explodes", columnar=True, columns=())
def explodes(table):
    raise RuntimeError("no model loaded")


def test_candids_or_mask_and_annotations_per_input_row(night):
    _, table = night
    result = run_columnar(load_filter(f"{__name__}:by_candids"), table)
    mags = dict(zip(table["candid"].to_pylist(), table["magpsf"].to_pylist()))
    assert result.passed == int(np.sum(np.array(list(mags.values())) < np.median(list(mags.values()))))
    for row in result.table.to_pylist():
        assert row["mag"] == round(mags[row["candid"]], 2)


@pytest.mark.parametrize(
    "returned, reason",
    [
        (lambda t: np.ones(3, bool), "mask has shape"),
        (lambda t: np.array([1, 2]), "not in the batch"),
        (lambda t: "yes", "expected a boolean mask or candids"),
        (lambda t: (np.ones(t.num_rows, bool), {"x": [1]}), "annotation 'x' has 1 values"),
        (lambda t: (np.ones(t.num_rows, bool), {"x": [float("nan")] * t.num_rows}), "not JSON"),
    ],
)
def test_unusable_columnar_results_fail_the_batch_with_a_reason(night, returned, reason):
    _, table = night
    broken = load_filter(f"{__name__}:explodes")
    broken.function = returned
    with pytest.raises(ColumnarFilterError, match=reason):
        select(broken, table)


def test_a_raising_columnar_filter_makes_every_row_an_error(night):
    _, table = night
    result = run_columnar(load_filter(f"{__name__}:explodes"), table, source="night 20231012")
    assert (result.read, result.errors, result.passed, result.table.num_rows) == (table.num_rows, table.num_rows, 0, 0)
    assert result.problems == [("night 20231012", ERROR, "RuntimeError: no model loaded")]


# ----------------------------------------------------------------------------------- many nights, on Dask

REAL_NIGHT = dt.date(2023, 10, 13)
SIMULATED_NIGHTS = [dt.date(2023, 10, 10), dt.date(2023, 10, 11), dt.date(2023, 10, 12)]


@pytest.fixture(scope="module")
def archived(kafka_bootstrap, packets, tmp_path_factory) -> tuple[Path, dict[dt.date, list[bytes]]]:
    """Four nights published and archived by the real archiver: three simulated (200 alerts in three programmes
    each) and one of the packets of several versions (ZTF's 59 real ones, programme 1, in CI)."""
    naming = TopicNaming(survey=f"re{uuid.uuid4().hex[:8]}")
    dest = tmp_path_factory.mktemp("reanalysis-archive")
    nights = {n: [a.packet for a in simulate_night(200, night=n, seed=i)] for i, n in enumerate(SIMULATED_NIGHTS)}
    nights[REAL_NIGHT] = list(packets)
    for night, packets in nights.items():
        by_programme: dict[int, list[bytes]] = {}
        for packet in packets:
            by_programme.setdefault(peek(packet).programid, []).append(packet)
        publish_night(kafka_bootstrap, naming, night, by_programme)
        archive_night(kafka_bootstrap, naming, night, str(dest), ArchiveOptions(row_group_rows=64))
    return dest, nights


def test_nights_are_given_as_ranges_and_lists():
    assert parse_nights(["20231030..20231102", "20231005,2023-10-30"]) == [
        dt.date(2023, 10, 5),
        dt.date(2023, 10, 30),
        dt.date(2023, 10, 31),
        dt.date(2023, 11, 1),
        dt.date(2023, 11, 2),
    ]
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_nights(["20231102..20231030"])
    with pytest.raises(ValueError, match="not a night date"):
        parse_nights(["2023103..20231102"])
    with pytest.raises(ValueError, match="no night given"):
        parse_nights([","])


def expected_passes(name: str, nights: dict[dt.date, list[bytes]]) -> set[tuple]:
    """The per-alert filter over each night's original packets, in this process: (candid, objectId, night,
    programid, annotations)."""
    rows = set()
    for night, packets in nights.items():
        result = run_batch(name, packets)
        for row, text in zip(result.table.to_pylist(), result.annotation_texts):
            rows.add((row["candid"], row["objectId"], f"{night:%Y%m%d}", row["programid"], text.decode()))
    return rows


def passes_in(out: Path) -> set[tuple]:
    table = ds.dataset(out, format="parquet").to_table()
    assert table.column_names == ["candid", "objectId", "night", "programid", "annotations"]
    rows = [tuple(r.values()) for r in table.to_pylist()]
    assert len(rows) == len(set(rows)), "a pass written twice"
    return set(rows)


@pytest.mark.parametrize("name", ["bright_transients", "variable_stars"])
def test_per_alert_columnar_and_dask_reanalyses_pass_the_same_alerts(name, archived, tmp_path, prefect_server):
    from alertdist.flows.offline_filter import offline_filter

    dest, nights = archived
    expected = expected_passes(name, nights)
    assert len({row[2] for row in expected}) == 4, "every night has passes"
    for columnar in (True, False):
        out = tmp_path / ("columnar" if columnar else "per-alert")
        summary = offline_filter(
            filter_name=name,
            out=str(out),
            nights=["20231010..20231012", "20231013"],
            archive=str(dest),
            columnar=columnar,
            workers=2,
        )
        assert passes_in(out) == expected
        assert summary["failed"] == {} and summary["passed"] == len(expected)
        counts = json.loads((out / "_counts.json").read_text())
        assert counts["nights"]["20231013"]["read"] == len(nights[REAL_NIGHT])
        for night, packets in nights.items():
            per_night = counts["nights"][f"{night:%Y%m%d}"]
            assert per_night["read"] == len(packets) == per_night["passed"] + per_night["rejected"]
            assert per_night["errors"] == 0
        assert per_night["units"] == 1 and counts["nights"]["20231012"]["units"] == 3


def _subflow_parameters(flow_run_id) -> dict[str, list[str]]:
    """The parameter names of each flow run started inside ``flow_run_id``, as the Prefect server recorded them."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            return {r.name.split("-")[0]: sorted(r.parameters) for r in runs}

    return asyncio.run(read())


def test_a_damaged_night_is_retried_and_reported_and_the_others_land(archived, tmp_path, prefect_server):
    from alertdist.flows.offline_filter import offline_filter

    dest, nights = archived
    copy = tmp_path / "archive"
    shutil.copytree(dest, copy)
    damaged = next((copy / "parquet" / "night=20231011").rglob("*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a truncated copy
    out = tmp_path / "out"
    state = offline_filter(
        filter_name="bright_transients",
        out=str(out),
        nights=["20231009..20231013"],
        archive=str(copy),
        columnar=True,
        workers=2,
        return_state=True,
    )
    assert state.is_failed()
    assert "20231011" in state.message and "20231009" in state.message
    # like every flow's, the reanalysis's recorded parameters are plain values: no Settings, no password
    assert _subflow_parameters(state.state_details.flow_run_id) == {
        "reanalyse": ["columnar", "filter_name", "missing", "out", "units"]
    }
    counts = json.loads((out / "_counts.json").read_text())
    programme = damaged.parent.name.split("=")[1]
    assert set(counts["failed"]) == {"20231009", f"20231011 p{programme}"}
    assert "ArchiveReadError" in counts["failed"][f"20231011 p{programme}"]
    assert "night 20231009 is not in" in counts["failed"]["20231009"]
    kept = {n: p for n, p in nights.items() if n != dt.date(2023, 10, 11)}
    others = set(expected_passes("bright_transients", kept))
    assert {row for row in passes_in(out) if row[2] != "20231011"} == others
    for night, packets in kept.items():
        assert counts["nights"][f"{night:%Y%m%d}"]["read"] == len(packets)


def test_the_filter_batch_command_reanalyses_a_range_of_nights(archived, tmp_path, prefect_server, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL

    from alertdist.cli.main import main

    dest, nights = archived
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    out = tmp_path / "passes"
    argv = ["filter", "batch", "solar_system", "--nights", "20231010..20231013", "--archive", str(dest)]
    assert main([*argv, "--columnar", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert passes_in(out) == expected_passes("solar_system", nights)
    assert f"20231013: units 1, read {len(nights[REAL_NIGHT])}" in printed
    assert main([*argv, "--out", str(tmp_path / "x.parquet")]) == 1
    assert "give --out FOLDER" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- live


def live_outputs(bootstrap: str, naming: TopicNaming, name: str) -> tuple[list, list]:
    """What a live filter wrote: (partition, key, value, annotations) of each output, and (value, source
    partition, source offset) of each errors-topic message, sorted."""
    outputs = sorted(
        (m.partition(), m.key(), m.value(), dict(m.headers())["alertdist.annotations"])
        for m in live_support.outputs_of(bootstrap, naming, name)
    )
    errors = sorted(
        (m.value(), *(dict(m.headers())[f"alertdist.source_{k}"] for k in ("partition", "offset")))
        for m in live_support.read_topic(bootstrap, naming.filter_errors_topic(live_support.NIGHT, name))
    )
    return outputs, errors


#: Passes among `packets` (ZTF's 59 real ones, or the made ones without ../shared) and the simulated night of seed 7.
KNOWN_LIVE_PASSES = {
    True: {"bright_transients": 18, "solar_system": 24},
    False: {"bright_transients": 19, "solar_system": 11},
}


@pytest.mark.parametrize("name", ["bright_transients", "solar_system"])
def test_the_columnar_filter_live_writes_what_the_per_alert_one_writes(name, kafka_bootstrap, packets):
    first = packets
    packets = first + [a.packet for a in simulate_night(300, night=live_support.NIGHT, seed=7)]
    bad = [(1, b"not an alert"), (2, first[0][:500])]
    seen = {}
    for columnar in (False, True):
        naming = TopicNaming(survey=f"lc{uuid.uuid4().hex[:8]}")
        live_support.publish_night(kafka_bootstrap, naming, packets, extra=bad)
        report = live_support.run_live(
            name,
            live_support.NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            options=live_support.FAST,
            columnar=columnar,
        )
        assert report.status == "finished" and report.lag == 0
        assert (report.read, report.malformed, report.errors) == (len(packets) + 2, 2, 0)
        seen[columnar] = (report.passed, *live_outputs(kafka_bootstrap, naming, name))
    assert seen[True] == seen[False]
    passed, outputs, errors = seen[True]
    assert passed == len(outputs) == KNOWN_LIVE_PASSES[have_real_data()][name] and len(errors) == 2


@alert_filter(name="explodes_live", columnar=True, columns=("magpsf",))
def explodes_live(table):
    raise RuntimeError("no model loaded")


def test_a_columnar_filter_failing_on_a_batch_sends_its_alerts_to_the_errors_topic(kafka_bootstrap, packets):
    naming = TopicNaming(survey=f"lx{uuid.uuid4().hex[:8]}")
    live_support.publish_night(kafka_bootstrap, naming, packets)
    report = live_support.run_live(
        f"{__name__}:explodes_live",
        live_support.NIGHT,
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        options=replace(live_support.FAST, error_threshold=10_000),
    )
    assert (report.status, report.read, report.errors, report.passed) == (
        "finished",
        len(packets),
        len(packets),
        0,
    )  # 59 with ../shared
    outputs, errors = live_outputs(kafka_bootstrap, naming, "explodes_live")
    assert outputs == [] and sorted(e[0] for e in errors) == sorted(packets)
    reasons = {
        dict(m.headers())["alertdist.error"]
        for m in live_support.read_topic(
            kafka_bootstrap, naming.filter_errors_topic(live_support.NIGHT, "explodes_live")
        )
    }
    assert reasons == {b"RuntimeError: no model loaded"}


def test_a_packet_that_does_not_decode_to_arrow_is_malformed_and_its_batch_goes_on(packet_files):
    packets = [p.read_bytes() for p in packet_files]
    damaged = bytearray(packets[3])
    history = parse_container(packets[3]).body_start + 1000  # past the candidate: peek still reads it
    damaged[history : history + 8] = b"\xff" * 8
    assert peek(bytes(damaged)).candid == peek(packets[3]).candid
    batch = [*packets[:3], bytes(damaged), *packets[4:]]
    batches = PacketBatches(load_filter("bright_transients", columnar=True))
    verdicts = batches.judge(batch)
    per_alert = [load_filter("bright_transients").judge(p) for p in packets]
    assert verdicts[3].outcome == MALFORMED and "Avro error" in verdicts[3].reason
    assert verdicts[:3] + verdicts[4:] == per_alert[:3] + per_alert[4:]
    assert any(v.outcome == PASSED for v in verdicts)
    assert [v.outcome for v in batches.judge([bytes(damaged)] * 2)] == [MALFORMED] * 2
