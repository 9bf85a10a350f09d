"""Reanalysis: columnar filters against their per-alert versions, on the archive's own columns.

The tables come from the archiver's decoder (`alertdist.archive.parquet.AlertDecoder`), so they have exactly the
columns a Parquet night has; the per-alert filters read the same packets through `AlertFilter.judge`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from alertdist.archive.parquet import AlertDecoder, night_table_columns, packet_headers, writer_schema_of
from alertdist.avro.codec import peek
from alertdist.filters import ERROR, FilterLookupError, alert_filter, available_filters, load_filter
from alertdist.filters.batch import run_batch, run_columnar
from alertdist.filters.columnar import ColumnarFilterError, select
from alertdist.simulate.night import simulate_night
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
def night(real_packets, tmp_path_factory) -> tuple[list[bytes], pa.Table]:
    """The 59 real packets (schemas 3.0, 3.3, 4.01) and a simulated night of 1,500 (4.02), as packets and a table."""
    packets = real_packets + [a.packet for a in simulate_night(1500, night=NIGHT, seed=11)]
    return packets, archive_table(packets, tmp_path_factory.mktemp("decoder"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_columnar_twins_pass_the_same_candids_with_the_same_annotations(name, night, real_packets):
    packets, table = night
    per_alert = run_batch(name, packets)
    columnar = run_columnar(name, table)
    assert columnar.table.to_pylist() == per_alert.table.to_pylist()
    assert (columnar.read, columnar.passed, columnar.rejected) == (per_alert.read, per_alert.passed, per_alert.rejected)
    assert 0 < columnar.passed < columnar.read
    # the real alerts alone (three schema versions, nulls where a version lacks a field) agree too
    real = run_columnar(name, table.slice(0, len(real_packets)))
    assert real.table.to_pylist() == run_batch(name, real_packets).table.to_pylist()


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
