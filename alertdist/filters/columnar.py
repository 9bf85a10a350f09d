"""Columnar filters: many alerts in as a `pyarrow.Table`, which rows pass (and their annotations) out.

A columnar filter (``@alert_filter(columnar=True, columns=...)``) gets a table with the Parquet archive's columns
(at least those it declares, and always ``candid``, ``objectId``, ``programid``) and returns one of:

- a boolean mask, one value per row (numpy, list, or pyarrow; a null is False);
- the candids that pass (an integer array);
- either of these with annotations, ``(passes, annotations)``: a dict of name -> one value per *input* row, or a
  table of one row per input row. Only the passing rows' values are kept and nulls are left out, so a row's
  annotations are the dict a per-alert filter would have returned, encoded the same way (`annotation_text`).

    import numpy as np
    from alertdist.filters import alert_filter

    @alert_filter(name="very_bright", columnar=True, columns=("magpsf",))
    def very_bright(table):
        mag = table["magpsf"].to_numpy(zero_copy_only=False)
        return mag < 16, {"mag": mag}

Why a whole batch fails together: the filter is one call on it, so when it raises (or returns something unusable)
no row has a verdict; `select` raises `ColumnarFilterError` and the runners report every alert of the batch as
an error with that reason, as they do for a per-alert filter that raises.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from alertdist.avro.arrow import night_table_columns, packet_headers, writer_schema_of
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.avro.codec import AlertPacketError, peek
from alertdist.filters import (
    ERROR,
    MALFORMED,
    REJECTED,
    AlertFilter,
    Verdict,
    annotation_text,
    passed_verdict,
    short_reason,
)

__all__ = ["IDENTITY_COLUMNS", "ColumnarFilterError", "PacketBatches", "Selection", "select", "wanted_columns"]

IDENTITY_COLUMNS = ("candid", "objectId", "programid")


class ColumnarFilterError(ValueError):
    """A columnar filter raised on a batch or returned something that says nothing about its rows."""


@dataclass(frozen=True)
class Selection:
    """The passing rows of a batch (indices, in input order) and each one's annotations as JSON text."""

    rows: np.ndarray
    annotations: list[bytes]


def wanted_columns(alert_filter: AlertFilter) -> list[str] | None:
    """The columns to read for a columnar filter (its own and the identity ones), or None: every column."""
    if alert_filter.columns is None:
        return None
    return list(dict.fromkeys([*IDENTITY_COLUMNS, *alert_filter.columns]))


def select(alert_filter: AlertFilter, table: pa.Table) -> Selection:
    """Run a columnar filter on ``table``; raises `ColumnarFilterError` with a short reason if it fails."""
    try:
        result = alert_filter.function(table)
    except Exception as e:  # a plug-in may raise anything; the runner records it for every row
        raise ColumnarFilterError(short_reason(f"{type(e).__name__}: {e}")) from e
    annotations = None
    if isinstance(result, tuple) and len(result) == 2:
        result, annotations = result
    rows = _passing_rows(result, table)
    return Selection(rows, _annotations(annotations, rows, table.num_rows))


def _passing_rows(passes: object, table: pa.Table) -> np.ndarray:
    if isinstance(passes, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_boolean(passes.type):
            passes = passes.fill_null(False)
        passes = passes.to_numpy(zero_copy_only=False)
    values = np.asarray(passes)
    if values.dtype == bool:
        if values.shape != (table.num_rows,):
            raise ColumnarFilterError(
                f"the filter's mask has shape {values.shape}; the batch has {table.num_rows} rows"
            )
        return np.flatnonzero(values)
    if values.ndim == 1 and (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        candids = table["candid"].to_numpy(zero_copy_only=False)
        mask = np.isin(candids, values)
        unknown = np.setdiff1d(values, candids)
        if unknown.size:
            raise ColumnarFilterError(f"the filter passed {unknown.size} candid(s) not in the batch, e.g. {unknown[0]}")
        return np.flatnonzero(mask)
    raise ColumnarFilterError(
        f"filter returned {type(passes).__name__} of {values.dtype}; expected a boolean mask or candids, "
        "optionally with annotations: (passes, {name: values})"
    )


def _annotations(annotations: object, rows: np.ndarray, n_rows: int) -> list[bytes]:
    if annotations is None:
        return [b"{}"] * len(rows)
    if isinstance(annotations, pa.Table):
        annotations = {name: annotations[name] for name in annotations.column_names}
    if not isinstance(annotations, dict):
        raise ColumnarFilterError(f"annotations must be a dict of columns or a table, got {type(annotations).__name__}")
    taken = {}
    for name, values in annotations.items():
        if len(values) != n_rows:
            raise ColumnarFilterError(f"annotation {name!r} has {len(values)} values; the batch has {n_rows} rows")
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            taken[name] = values.take(pa.array(rows, pa.int64())).to_pylist()
        else:
            taken[name] = np.asarray(values, dtype=object)[rows].tolist()
    try:
        return [
            annotation_text({name: column[i] for name, column in taken.items() if column[i] is not None})
            for i in range(len(rows))
        ]
    except (TypeError, ValueError) as e:
        raise ColumnarFilterError(short_reason(f"annotations are not JSON (no NaN/inf, plain values only): {e}")) from e


class PacketBatches:
    """Verdicts for a batch of packets from a columnar filter: the packets decoded straight to Arrow by the
    archiver's decoder (`alertdist.avro.arrow_decoder.AlertDecoder`, DataFusion's Rust Avro reader), so the filter
    sees exactly the columns it sees over Parquet. One decoder per set of writer schemas met (one or two a night).
    """

    def __init__(self, alert_filter: AlertFilter, workdir: Path | None = None) -> None:
        self.filter = alert_filter
        self.workdir = Path(workdir or tempfile.gettempdir())
        self._decoders: dict[tuple[bytes, ...], AlertDecoder] = {}

    def judge(self, packets: Sequence[bytes]) -> list[Verdict]:
        """One verdict per packet, in order, as `AlertFilter.judge` gives them one by one."""
        verdicts: list[Verdict | None] = [None] * len(packets)
        good, candids = [], []
        for i, packet in enumerate(packets):
            try:
                candids.append(peek(packet).candid)
                good.append(i)
            except AlertPacketError as e:
                verdicts[i] = Verdict(MALFORMED, reason=short_reason(f"undecodable packet: {e}"))
        if not good:
            return verdicts
        table, good = self._table(packets, good, candids, verdicts)
        if not good:
            return verdicts
        try:
            selection = select(self.filter, table)
        except ColumnarFilterError as e:
            failed = Verdict(ERROR, reason=str(e))
            for i in good:
                verdicts[i] = failed
            return verdicts
        passed = dict(zip(selection.rows.tolist(), selection.annotations))
        for row, i in enumerate(good):
            text = passed.get(row)
            verdicts[i] = _REJECTED if text is None else passed_verdict(text)
        return verdicts

    def _table(self, packets, good: list[int], candids: list[int], verdicts: list) -> tuple[pa.Table, list[int]]:
        """The good packets' table; when the batch does not decode, packet by packet, the bad ones malformed (as
        `AlertFilter.judge` makes them), so one damaged packet never costs its batch."""
        try:
            return self._decode([packets[i] for i in good], candids), good
        except Exception:  # DataFusion, Arrow and the decoder's own checks: find the packets at fault below
            pass
        tables, kept = [], []
        for i, candid in zip(good, candids):
            try:
                tables.append(self._decode([packets[i]], [candid]))
                kept.append(i)
            except Exception as e:
                verdicts[i] = Verdict(MALFORMED, reason=short_reason(f"undecodable packet: {type(e).__name__}: {e}"))
        return (pa.concat_tables(tables, promote_options="permissive") if tables else None), kept

    def _decode(self, packets: list[bytes], candids: list[int]) -> pa.Table:
        headers = tuple(packet_headers(packets))
        decoder = self._decoders.get(headers)
        if decoder is None:
            columns = night_table_columns(writer_schema_of(h) for h in headers)
            fields = _avro_fields(columns, wanted_columns(self.filter))
            decoder = self._decoders[headers] = AlertDecoder(columns, self.workdir, headers=headers, fields=fields)
        return decoder.decode(packets, candids)

    def close(self) -> None:
        for decoder in self._decoders.values():
            decoder.close()
        self._decoders.clear()


_REJECTED = Verdict(REJECTED)


def _avro_fields(columns: list, wanted: list[str] | None) -> set[str] | None:
    """The top-level Avro fields behind the columns a filter reads (``prv_candidates.jd``: ``prv_candidates``)."""
    if wanted is None:
        return None
    names = {name.partition(".")[0] for name in wanted}
    return {c.source[0] for c in columns if c.field.name in names}
