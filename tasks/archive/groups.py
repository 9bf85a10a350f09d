"""Write candid-ordered alerts to the tarball and the Parquet file together, a batch at a time.

Alerts come in batches of a few MB (`batch_bytes`). Each batch is decoded for Parquet first; that is where every
record is checked whole. If a batch does not decode, the codec's strict decoder finds the packets at fault: they
are rejected (with the codec's reason) and left out of both files, and the rest is decoded again. Then the
tarball thread takes the batch while this thread reads and decodes the next one. The decoded batches of a row
group are kept as Arrow tables (the packets are dropped) until the row group is full (`rows` alerts or
`max_bytes` of packets), then written as one row group: row groups stay large for scans while memory holds one
row group of Arrow data and two small batches of packets, whatever the night's size. gzip (ISA-L), hashing, file
writes, DataFusion and the Parquet writer release the GIL, so this uses both cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from tasks.archive.parquet import AlertDecoder, ParquetPartWriter
from tasks.archive.stream import ArchiveInterrupted
from tasks.archive.tarball import TarballWriter
from tasks.codec import AlertPacketError, decode

__all__ = ["GroupWriter"]

#: on_reject(index entry, packet, reason): a packet whose record turned out malformed when decoded
Reject = Callable[[tuple, bytes, str], None]


class GroupWriter:
    """Alerts in, by `add` in candid order; `close` writes what is left; `shutdown` always, in a finally.

    Index entries are the spool's: (candid, partition, offset, position, size, mtime, crc, schema).
    """

    def __init__(self, tarball: TarballWriter, table: ParquetPartWriter, decoder: AlertDecoder, *, rows: int,
                 max_bytes: int, batch_bytes: int, on_reject: Reject, stop: threading.Event | None = None) -> None:
        self.tarball, self.table, self.decoder = tarball, table, decoder
        self.rows, self.max_bytes, self.batch_bytes = rows, max_bytes, batch_bytes
        self.on_reject, self.stop = on_reject, stop
        self.entries: list[tuple] = []
        self.packets: list[bytes] = []
        self.size = 0  # packet bytes in the batch
        self.group: list[pa.Table] = []  # decoded batches of the row group being built
        self.group_rows = self.group_bytes = 0
        self._tar_thread = ThreadPoolExecutor(1, thread_name_prefix="tarball")
        self._pending: Future | None = None

    def add(self, entry: tuple, packet: bytes) -> bool:
        """Add one alert; True when that completed a row group (it is written)."""
        self.entries.append(entry)
        self.packets.append(packet)
        self.size += len(packet)
        if (self.size >= self.batch_bytes or self.group_rows + len(self.packets) >= self.rows
                or self.group_bytes + self.size >= self.max_bytes):
            self._batch()
            if self.group_rows >= self.rows or self.group_bytes >= self.max_bytes:
                self._row_group()
                return True
        return False

    def close(self) -> None:
        """Write the last batch and row group, and wait until the tarball has every member."""
        self._batch()
        self._row_group()
        self._wait()

    def shutdown(self) -> None:
        """Let the tarball thread end (after its current batch), whether or not all went well."""
        self._tar_thread.shutdown(wait=True)

    def _batch(self) -> None:
        if not self.packets:
            return
        if self.stop is not None and self.stop.is_set():
            raise ArchiveInterrupted("stopped while writing; nothing was published under a final name")
        entries, packets, size = self.entries, self.packets, self.size
        self.entries, self.packets, self.size = [], [], 0
        entries, packets, table = self._decode(entries, packets)
        self._wait()
        self._pending = self._tar_thread.submit(self._add_members, entries, packets)
        self.group.append(table)
        self.group_rows += table.num_rows
        self.group_bytes += size

    def _row_group(self) -> None:
        if self.group:
            self.table.write(pa.concat_tables(self.group))  # chunks side by side: no copy, one row group
        self.group, self.group_rows, self.group_bytes = [], 0, 0

    def _decode(self, entries: list[tuple], packets: list[bytes]):
        candids = [int(e[0]) for e in entries]
        try:
            return entries, packets, self.decoder.decode(packets, candids)
        except Exception as error:  # DataFusion raises plain Exceptions; the order check a RuntimeError
            malformed = {}
            for i, packet in enumerate(packets):
                try:
                    decode(packet)
                except AlertPacketError as e:
                    malformed[i] = f"the record does not decode: {e}"
            if not malformed:
                raise RuntimeError(f"decoding {len(packets)} alerts (candids {candids[0]}..{candids[-1]}) for Parquet "
                                   f"failed though each one decodes on its own: {error}") from error
        for i, reason in malformed.items():
            self.on_reject(entries[i], packets[i], reason)
        kept = [i for i in range(len(packets)) if i not in malformed]
        entries, packets = [entries[i] for i in kept], [packets[i] for i in kept]
        return entries, packets, self.decoder.decode(packets, [candids[i] for i in kept])

    def _add_members(self, entries: list[tuple], packets: list[bytes]) -> None:
        for entry, packet in zip(entries, packets):
            self.tarball.add(f"{int(entry[0])}.avro", packet, int(entry[5]))

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises the tarball thread's error here
