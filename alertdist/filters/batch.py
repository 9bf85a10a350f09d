"""Run a filter over packets at rest (a folder, a tarball, a list) and get a table of the alerts that passed.

The same `AlertFilter.judge` as the live runner decides and encodes the annotations, so a night filtered live
and the same packets filtered here give the same alerts with the same annotations. The table has one row per
passing alert, in input order: ``candid``, ``objectId``, ``programid`` and one column per annotation key.

Packets are trusted no more than the publisher trusts them: files and members are read as its sources read
them (never past the largest packet, no link followed out of a folder), and a packet whose identity is
implausible (`codec.info_problem`: NaN jd, negative candid, ...) is counted malformed with its reason before the
filter sees it.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from alertdist.atomic import replaced_atomically
from alertdist.avro.codec import AlertPacketError, PacketInfo, info_problem, peek
from alertdist.filters import ERROR, MALFORMED, PASSED, REJECTED, AlertFilter, Verdict, load_filter, short_reason
from alertdist.filters.columnar import IDENTITY_COLUMNS, ColumnarFilterError, select
from alertdist.publish.sources import (
    DEFAULT_MAX_PACKET_BYTES,
    SourceError,
    SourcePacket,
    read_packet_file,
    safe_text,
    tarball_packets,
)

__all__ = [
    "IDENTITY_COLUMNS",
    "PASSES_SCHEMA",
    "BatchResult",
    "iter_packets",
    "passes_table",
    "run_batch",
    "run_columnar",
    "write_table",
]
_IDENTITY_SCHEMA = pa.schema([("candid", pa.int64()), ("objectId", pa.string()), ("programid", pa.int32())])


@dataclass
class BatchResult:
    """The passing alerts as a table, and what happened to every input: read == passed + rejected + errors + malformed.

    ``problems`` lists ``(source, outcome, reason)`` for each alert the filter raised on or that could not be
    decoded, so nothing is dropped silently.
    """

    filter_name: str
    table: pa.Table
    read: int = 0
    passed: int = 0
    rejected: int = 0
    errors: int = 0
    malformed: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    annotation_texts: list[bytes] = field(default_factory=list)  # each passing row's, as the live runner sends them


def iter_packets(source: object) -> Iterator[tuple[str, bytes]]:
    """``(name, packet)`` pairs from a folder of ``*.avro``, one ``.avro`` file, a (gzipped) tarball, or an iterable.

    An iterable may hold packets (bytes), ``(name, packet)`` pairs, objects with ``.packet`` and ``.candid`` (simulated
    alerts), or be any `PacketSource` (its `SourcePacket`s, with the problems its reading found). Folders are read in
    sorted name order; files starting with a dot (partial writes) are skipped. A file or member that is not a packet
    (too big, not ``*.avro``, a link out of the folder) comes as its head at most, which no filter can decode;
    `run_batch` reports it with the reason.
    """
    for name, packet, _ in _found(source):
        yield name, packet


def _found(source: object) -> Iterator[tuple[str, bytes, str | None]]:
    """``(name, packet, problem)``: `iter_packets` with what the reading already found wrong (None: nothing)."""
    if isinstance(source, (str, os.PathLike)):
        yield from _from_path(Path(source))
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield "#0", bytes(source), None
        return
    for i, item in enumerate(source):
        if item is None:  # a live `PacketSource`'s "nothing new right now"
            continue
        if isinstance(item, SourcePacket):  # from any `PacketSource`, with what its reading found wrong
            yield item.name, item.packet, item.problem
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield f"#{i}", bytes(item), None
        elif isinstance(item, tuple) and len(item) == 2:
            yield str(item[0]), item[1], None
        elif hasattr(item, "packet"):
            yield str(getattr(item, "candid", i)), item.packet, None
        else:
            raise TypeError(f"item {i} of the packets is a {type(item).__name__}; expected bytes or (name, bytes)")


def _from_path(path: Path, max_bytes: int = DEFAULT_MAX_PACKET_BYTES) -> Iterator[tuple[str, bytes, str | None]]:
    if path.is_dir():
        for file in sorted(path.rglob("*.avro")):  # rglob does not descend into linked folders
            if not file.name.startswith("."):
                item = read_packet_file(file, path, max_bytes)
                if item is not None:
                    yield str(file.relative_to(path)), item.packet, item.problem
    elif path.is_file() and tarfile.is_tarfile(path):
        try:
            for item in tarball_packets(path, max_bytes=max_bytes):
                yield item.name, item.packet, item.problem
        except SourceError as e:
            raise ValueError(f"reading the tarball {path} failed: {e}; is it complete?") from e
    elif path.is_file():
        item = read_packet_file(path, Path(os.path.realpath(path)).parent, max_bytes)  # the file the user named
        if item is not None:
            yield path.name, item.packet, item.problem
    else:
        raise FileNotFoundError(f"no packets at {path}: expected a folder of .avro files, an .avro file or a tarball")


def run_batch(
    filter_: str | AlertFilter,
    packets: object,
    *,
    progress: Callable[[BatchResult], None] | None = None,
    progress_every: int = 1000,
) -> BatchResult:
    """Run a filter over packets (anything `iter_packets` takes) and return the passing alerts as a table.

    Parameters
    ----------
    filter_ : str or AlertFilter
        A name for `load_filter` (bundled, or ``module:function``), or a loaded filter.
    progress : callable, optional
        Called every `progress_every` packets with the result so far (its table not yet built).
    """
    alert_filter = load_filter(filter_) if isinstance(filter_, str) else filter_
    if alert_filter.columnar:
        raise TypeError(f"filter {alert_filter.name!r} is columnar: run it with run_columnar on a table")
    result = BatchResult(alert_filter.name, pa.table({}))
    identities: list[tuple[int | None, str | None, int | None]] = []
    annotations: list[dict] = []
    for name, packet, problem in _found(packets):
        info, verdict = _checked(packet, problem)
        if verdict is None:
            verdict = alert_filter.judge(packet)
        result.read += 1
        if verdict.outcome == PASSED:
            result.passed += 1
            identities.append((info.candid, info.objectId, info.programid))
            annotations.append(json.loads(verdict.annotations))
            result.annotation_texts.append(verdict.annotations)
        elif verdict.outcome == REJECTED:
            result.rejected += 1
        else:
            if verdict.outcome == ERROR:
                result.errors += 1
            elif verdict.outcome == MALFORMED:
                result.malformed += 1
            result.problems.append((safe_text(name), verdict.outcome, verdict.reason))
        if progress is not None and result.read % progress_every == 0:
            progress(result)
    result.table = _table(identities, annotations)
    if progress is not None:
        progress(result)
    return result


def run_columnar(filter_: str | AlertFilter, table: pa.Table, *, source: str = "table") -> BatchResult:
    """Run a columnar filter on a table of the archive's columns; the same result table as `run_batch`.

    A filter that fails on the table makes every row an error (one problem naming ``source`` and the reason).
    """
    alert_filter = load_filter(filter_, columnar=True) if isinstance(filter_, str) else filter_
    result = BatchResult(alert_filter.name, _table([], []), read=table.num_rows)
    try:
        selection = select(alert_filter, table)
    except ColumnarFilterError as e:
        result.errors = table.num_rows
        result.problems.append((source, ERROR, str(e)))
        return result
    picked = table.select(list(IDENTITY_COLUMNS)).take(pa.array(selection.rows, pa.int64()))
    result.passed = picked.num_rows
    result.rejected = result.read - result.passed
    identities = list(zip(*(picked[name].to_pylist() for name in IDENTITY_COLUMNS)))
    result.table = _table(identities, [json.loads(text) for text in selection.annotations])
    result.annotation_texts = selection.annotations
    return result


PASSES_SCHEMA = pa.schema(
    [*_IDENTITY_SCHEMA.remove(2), ("night", pa.string()), ("programid", pa.int32()), ("annotations", pa.string())]
)


def passes_table(result: BatchResult, night: str) -> pa.Table:
    """A reanalysis' rows for one night's file: candid, objectId, night, programid and the annotations' JSON text
    (one column for any filter, so every night's file has the same schema)."""
    ids = result.table
    return pa.table(
        [
            ids["candid"],
            ids["objectId"],
            pa.array([night] * ids.num_rows, pa.string()),
            ids["programid"],
            pa.array([t.decode() for t in result.annotation_texts], pa.string()),
        ],
        schema=PASSES_SCHEMA,
    )


def _checked(packet: bytes, problem: str | None) -> tuple[PacketInfo | None, Verdict | None]:
    """The packet's routing facts, or the malformed verdict of a packet no filter may see (and why)."""
    if problem is not None:
        return None, Verdict(MALFORMED, reason=problem)
    try:
        info = peek(packet)
    except AlertPacketError as e:
        return None, Verdict(MALFORMED, reason=short_reason(f"undecodable packet: {e}"))
    implausible = info_problem(info)
    if implausible is not None:
        return None, Verdict(MALFORMED, reason=f"implausible: {implausible}")
    return info, None


def _table(identities: list[tuple], annotations: list[dict]) -> pa.Table:
    columns = {
        name: pa.array([row[i] for row in identities], type=_IDENTITY_SCHEMA.field(name).type)
        for i, name in enumerate(IDENTITY_COLUMNS)
    }
    keys = list(dict.fromkeys(key for row in annotations for key in row))
    for key in keys:
        values = [row.get(key) for row in annotations]
        column = key if key not in IDENTITY_COLUMNS else f"annotation_{key}"
        try:
            columns[column] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across alerts: keep each value as JSON text
            columns[column] = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in values])
    return pa.table(columns)


def write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write the table as Parquet or CSV (by suffix), atomically: a reader never sees a partial file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"cannot write {path}: the table can be written as .parquet or .csv")
    with replaced_atomically(path) as scratch:
        if suffix == ".parquet":
            pq.write_table(table, scratch)
        else:
            pacsv.write_csv(_flat(table), scratch)
    return path


def _flat(table: pa.Table) -> pa.Table:
    """CSV holds no nested values: lists and structs become JSON text."""
    for i, column in enumerate(table.columns):
        if pa.types.is_nested(column.type):
            text = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in column.to_pylist()])
            table = table.set_column(i, table.field(i).name, text)
    return table
