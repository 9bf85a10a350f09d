"""The columnar archive: one Parquet file per programme and night, one row per alert.

The row layout (Arrow columns derived from the Avro schemas, packet framing kept for a byte-exact rebuild) is
the codec's: `alertdist.avro.arrow`; its tables come from `alertdist.avro.arrow_decoder.AlertDecoder`. Here:
where a night's file goes, and how it is written.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from alertdist.nights.dates import format_night

__all__ = ["ParquetPartWriter", "parquet_path"]


def parquet_path(night, programid: int) -> str:
    """``parquet/night=YYYYMMDD/programid=N/part-0.parquet`` (hive partitioning), relative to the archive root."""
    label = format_night(night)
    return f"parquet/night={label}/programid={programid}/part-0.parquet"


# ------------------------------------------------------------------------------------------------ writing


class ParquetPartWriter:
    """One Parquet file written row group by row group (each `write` is one row group).

    zstd on every column but the cutouts, including each leaf of `prv_candidates` and `fp_hists` (compression
    is set per leaf: a top-level name alone leaves nested leaves uncompressed). The cutouts are gzipped FITS
    already (zstd gains nothing on real stamps): stored without a second compression, dictionary or statistics
    (min/max of 15 KB blobs would only bloat the footer). Strings, nested ones too, are dictionary-encoded.
    """

    def __init__(self, fileobj, schema: pa.Schema, *, buffer_bytes: int = 8 * 1024 * 1024) -> None:
        stamps = {f.name for f in schema if f.type == pa.binary()}
        leaves = _leaf_columns(schema)
        others = [path for path, _ in leaves if path not in stamps]
        # pages and page headers reach ``fileobj`` in large pieces: each call into Python takes the GIL, and a
        # row group is hundreds of small writes that would each wait for the other threads' turn
        self._sink = pa.BufferedOutputStream(pa.PythonFile(fileobj, mode="w"), buffer_bytes)
        self._writer = pq.ParquetWriter(
            self._sink,
            schema,
            compression={**dict.fromkeys(others, "zstd"), **dict.fromkeys(stamps, "none")},
            use_dictionary=[path for path, physical in leaves if physical == "BYTE_ARRAY" and path not in stamps],
            write_statistics=[f.name for f in schema if f.name not in stamps and not pa.types.is_list(f.type)],
        )
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table, row_group_size=table.num_rows)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.detach()  # flushes; ``fileobj`` stays open for its owner


def _leaf_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """(dotted path, physical type) of every Parquet leaf column of ``schema``, as the writer names them."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [(parquet_schema.column(i).path, parquet_schema.column(i).physical_type) for i in range(len(parquet_schema))]
