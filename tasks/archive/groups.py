"""Write candid-ordered alerts to the tarball and the Parquet file together, one row group at a time.

A group (`rows` alerts or `max_bytes` of packets, whichever comes first) is decoded for Parquet first; that is
where each record is checked whole. If the batch does not decode, the codec's strict decoder finds the packets at
fault: they are rejected (with the codec's reason) and left out of both files, and the rest is decoded again. Then
the tarball thread takes the group while this thread writes its Parquet row group and goes on to read and decode
the next one. gzip (ISA-L), hashing, file writes, DataFusion and the Parquet writer release the GIL, so this uses
both cores; memory holds about three groups (being gzipped, being decoded, its Arrow table), whatever the night.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from tasks.archive.parquet import AlertDecoder, ParquetPartWriter
from tasks.archive.stream import ArchiveInterrupted
from tasks.archive.tarball import TarballWriter
from tasks.codec import AlertPacketError, decode

__all__ = ["GroupWriter"]

#: on_reject(index entry, packet, reason): a packet whose record turned out malformed when decoded
Reject = Callable[[tuple, bytes, str], None]


class GroupWriter:
    """Alerts in, by `add` in candid order; `close` writes the last group; `shutdown` always, in a finally.

    Index entries are the spool's: (candid, partition, offset, position, size, mtime, crc, schema).
    """

    def __init__(self, tarball: TarballWriter, table: ParquetPartWriter, decoder: AlertDecoder, *, rows: int,
                 max_bytes: int, on_reject: Reject, stop: threading.Event | None = None) -> None:
        self.tarball, self.table, self.decoder = tarball, table, decoder
        self.rows, self.max_bytes, self.on_reject, self.stop = rows, max_bytes, on_reject, stop
        self.entries: list[tuple] = []
        self.packets: list[bytes] = []
        self.size = 0
        self._tar_thread = ThreadPoolExecutor(1, thread_name_prefix="tarball")
        self._pending: Future | None = None

    def add(self, entry: tuple, packet: bytes) -> bool:
        """Add one alert; True when that completed (and wrote) a group."""
        self.entries.append(entry)
        self.packets.append(packet)
        self.size += len(packet)
        if len(self.packets) >= self.rows or self.size >= self.max_bytes:
            self._write()
            return True
        return False

    def close(self) -> None:
        """Write the last group and wait until the tarball has every member."""
        self._write()
        self._wait()

    def shutdown(self) -> None:
        """Let the tarball thread end (after its current group), whether or not all went well."""
        self._tar_thread.shutdown(wait=True)

    def _write(self) -> None:
        if not self.packets:
            return
        if self.stop is not None and self.stop.is_set():
            raise ArchiveInterrupted("stopped while writing; nothing was published under a final name")
        entries, packets = self.entries, self.packets
        self.entries, self.packets, self.size = [], [], 0
        entries, packets, table = self._decode(entries, packets)
        self._wait()
        self._pending = self._tar_thread.submit(self._add_members, entries, packets)
        self.table.write(table)

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
