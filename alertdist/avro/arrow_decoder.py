"""Packets to Arrow tables in the alert column layout (`alertdist.avro.arrow`), fast: `AlertDecoder`.

Decoding goes through Apache DataFusion's Avro reader (Rust): a batch of packets of one writer schema becomes one
Avro file of many records, decoded straight to Arrow at ~0.2 ms per alert, 6x faster than fastavro followed by
`pa.Table.from_pylist`. The fastavro route stays as the reference (tests check both give the same table) and
as the fallback where DataFusion is not installed. The archiver writes these tables to Parquet; the live
columnar filters judge them.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from alertdist.avro.arrow import PACKET_HEADER, PACKET_SYNC, Column, headers_metadata
from alertdist.avro.codec import decode
from alertdist.avro.container import SYNC_SIZE, build_container, parse_container, parse_header, zigzag_varint

__all__ = ["AlertDecoder"]

_SYNC = b"alertdist-batch!"  # any 16 bytes: the batch files are read once and deleted
_WRITEV_PARTS = 1024  # IOV_MAX on Linux


def _conform(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` as ``target``: struct fields matched by name (missing ones null), lists recursed, else cast."""
    if array.type == target:
        return array
    if pa.types.is_struct(target):
        children = dict(zip([f.name for f in array.type], array.flatten()))
        fields = list(target)
        arrays = [
            _conform(children[f.name], f.type) if f.name in children else pa.nulls(len(array), f.type) for f in fields
        ]
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(arrays, fields=fields, mask=mask)
    if pa.types.is_union(array.type) and array.type.mode == "dense":  # ["int", "long"]: each value from its branch
        branches = [_conform(array.field(i), target) for i in range(array.type.num_fields)]
        index_of = np.zeros(max(array.type.type_codes) + 1, dtype=np.int64)
        index_of[list(array.type.type_codes)] = range(array.type.num_fields)
        starts = np.cumsum([0] + [len(b) for b in branches[:-1]])
        rows = starts[index_of[np.asarray(array.type_codes)]] + np.asarray(array.offsets)
        return pa.concat_arrays(branches).take(pa.array(rows))
    if pa.types.is_list(target) and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        offsets = array.offsets
        values = array.values.slice(offsets[0].as_py(), offsets[-1].as_py() - offsets[0].as_py())
        offsets = pa.array(np.asarray(offsets, dtype=np.int64) - offsets[0].as_py(), pa.int32())
        mask = array.is_null() if array.null_count else None
        return pa.ListArray.from_arrays(offsets, _conform(values, target.value_type), type=target, mask=mask)
    return array.cast(target)


def _columns_from_arrow(table: pa.Table, columns: list[Column]) -> list[pa.Array]:
    """The night's columns from a decoded Avro table (records flattened once each, not once per field)."""
    children: dict[str, dict[str, pa.Array]] = {}
    arrays = []
    for column in columns:
        top = column.source[0]
        if top not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, column.field.type))
            continue
        if len(column.source) == 1:
            arrays.append(_conform(table.column(top).combine_chunks(), column.field.type))
            continue
        if top not in children:
            record = table.column(top).combine_chunks()
            children[top] = dict(zip([f.name for f in record.type], record.flatten()))  # with the parent's nulls
        child = children[top].get(column.source[1])
        arrays.append(
            pa.nulls(table.num_rows, column.field.type) if child is None else _conform(child, column.field.type)
        )
    return arrays


def _row(record: dict, columns: list[Column]) -> dict:
    row = {}
    for c in columns:
        value = record.get(c.source[0])
        if len(c.source) == 2 and value is not None:
            value = value.get(c.source[1])
        row[c.field.name] = value
    return row


class AlertDecoder:
    """Decode batches of packets into tables of the night's columns, in the order given.

    ``engine``: "datafusion" (fast, Rust), "fastavro" (reference), or "auto" (DataFusion when installed).
    ``fields``: the top-level Avro fields to decode (default all; ``candid`` always); the columns of the others
    come out null. A reader of a few columns (a live columnar filter) then never builds the cutouts in Arrow.
    """

    def __init__(
        self,
        columns: list[Column],
        workdir: Path,
        engine: str = "auto",
        headers: Sequence[bytes] = (),
        fields: Iterable[str] | None = None,
    ) -> None:
        self.columns = columns
        self.fields = None if fields is None else {"candid", *fields}
        self.headers = list(headers)  # every packet's header must be one of these (`packet_headers`)
        self._avro_schema = pa.schema([c.field for c in columns])
        framing = [pa.field(PACKET_HEADER, pa.int32()), pa.field(PACKET_SYNC, pa.binary(SYNC_SIZE))]  # nullable
        self.schema = pa.schema([*self._avro_schema, *framing], metadata=headers_metadata(self.headers))
        self.workdir = Path(workdir)
        if engine == "auto":
            try:
                import datafusion  # noqa: F401

                engine = "datafusion"
            except ImportError:
                engine = "fastavro"
        if engine not in ("datafusion", "fastavro"):
            raise ValueError(f"decoder engine must be 'auto', 'datafusion' or 'fastavro', not {engine!r}")
        self.engine = engine
        self._context = None
        self._scratch: int | None = None

    def copy(self) -> AlertDecoder:
        """Another decoder of the same columns, for another thread (each has its own DataFusion context)."""
        return AlertDecoder(self.columns, self.workdir, self.engine, self.headers, self.fields)

    def decode(self, packets: Sequence[bytes], candids: Sequence[int]) -> pa.Table:
        """A table of ``packets`` (rows in the same order); ``candids`` checks that no row moved."""
        if not packets:
            return self.schema.empty_table()
        containers = [parse_container(p) for p in packets]
        header_ids = [self._header_id(p, c.header_end) for p, c in zip(packets, containers)]
        if self.engine == "fastavro":
            table = self._decode_fastavro(packets)
        else:
            table = self._decode_datafusion(packets, containers, header_ids)
        decoded = table.column("candid").to_numpy()
        if not np.array_equal(decoded, np.asarray(candids, dtype=np.int64)):
            raise RuntimeError("decoded rows are not in the order of the packets given; refusing to write them")
        framing = [
            pa.array(header_ids, pa.int32()),
            pa.array([c.sync_marker for c in containers], pa.binary(SYNC_SIZE)),
        ]
        return pa.Table.from_arrays([*table.columns, *framing], schema=self.schema)

    def _decode_fastavro(self, packets: Sequence[bytes]) -> pa.Table:
        fields = None if self.fields is None else tuple(self.fields)
        return pa.Table.from_pylist([_row(decode(p, fields), self.columns) for p in packets], schema=self._avro_schema)

    def _header_id(self, packet: bytes, header_end: int) -> int:
        for i, header in enumerate(self.headers):  # one or a few per night: compare in place, do not hash
            if len(header) == header_end and packet.startswith(header):
                return i
        raise RuntimeError(f"a packet's header ({header_end} bytes) is not among the {len(self.headers)} given")

    def _decode_datafusion(self, packets: Sequence[bytes], containers: list, header_ids: list[int]) -> pa.Table:
        groups: dict[int, tuple[list[memoryview], list[int]]] = {}  # header id -> (record bodies, rows)
        for i, (packet, container, header) in enumerate(zip(packets, containers, header_ids)):
            bodies, rows = groups.setdefault(header, ([], []))
            bodies.append(memoryview(packet)[container.body_start : container.body_end])
            rows.append(i)
        tables = [self._read_batch(self.headers[h], bodies) for h, (bodies, _) in groups.items()]
        if len(tables) == 1:
            return tables[0]
        order = np.concatenate([np.asarray(rows) for _, rows in groups.values()])
        return pa.concat_tables(tables).take(pa.array(np.argsort(order, kind="stable")))

    def _read_batch(self, packet_header: bytes, bodies: list[memoryview]) -> pa.Table:
        """Decode record bodies of one writer schema: written as one Avro file that DataFusion reads straight into
        Arrow (see `_scratch_file`)."""
        import datafusion

        if self._context is None:
            self._context = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(1))
        schema_text = packet_header[slice(*parse_header(packet_header))]
        header = build_container(schema_text, b"", _SYNC, ("avro.schema", "avro.codec"))
        header = header[: len(header) - len(_SYNC) - 2]  # drop the empty block build_container added
        size = sum(map(len, bodies))
        fd = self._scratch_file(size)
        parts = [header, zigzag_varint(len(bodies)) + zigzag_varint(size), *bodies, _SYNC]
        position = 0
        for start in range(0, len(parts), _WRITEV_PARTS):  # no copy of the bodies on the way
            chunk = parts[start : start + _WRITEV_PARTS]
            written = os.pwritev(fd, chunk, position)
            if written != sum(map(len, chunk)):
                raise OSError(f"short write to the decoder's scratch file: {written} bytes")
            position += written
        os.ftruncate(fd, position)
        frame = self._context.read_avro(f"/proc/self/fd/{fd}", file_extension="")
        if self.fields is not None:
            wanted = [name for name in frame.schema().names if name in self.fields]
            frame = frame.select(*[f'"{name}"' for name in wanted])  # quoted: a bare name would be lower-cased
        raw = frame.to_arrow_table()
        return pa.Table.from_arrays(_columns_from_arrow(raw, self.columns), schema=self._avro_schema)

    def _scratch_file(self, size: int) -> int:
        """The decoder's batch file, made once and rewritten in place (its pages are reused, not zeroed anew each
        batch): in memory-backed /dev/shm where there is room, else beside the spool. It is unlinked at once and
        read through /proc/self/fd, so it disappears with the descriptor, even if the process is killed."""
        if self._scratch is None:
            fd, path = tempfile.mkstemp(
                prefix="alertdist-batch-", suffix=".avro", dir=_scratch_folder(self.workdir, size)
            )
            os.unlink(path)
            self._scratch = fd
            self._closer = weakref.finalize(self, os.close, fd)
        return self._scratch

    def close(self) -> None:
        """Let go of the scratch file (also done when the decoder is garbage-collected)."""
        if self._scratch is not None:
            self._closer()
            self._scratch = None


def _scratch_folder(workdir: Path, size: int) -> Path:
    """/dev/shm when it exists and has room for ``size`` bytes four times over, else ``workdir``."""
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
    except OSError:
        return workdir
    return shm if os.access(shm, os.W_OK) and stats.f_bavail * stats.f_frsize > 4 * size else workdir
