"""Write candid-ordered alerts to the tarball and the Parquet file together, a batch at a time.

Alerts come in batches of a few MB (`batch_bytes`), decoded for Parquet on two threads (DataFusion runs without
the GIL) and used in the order they were filled. Decoding is where every record is checked whole: if a batch does
not decode, the codec's strict decoder finds the packets at fault, which are rejected (with the codec's reason)
and left out of both files, and the rest is decoded again. A decoded batch goes to the tarball thread, and its
Arrow table joins the row group being built (the packets are then dropped); when the row group is full (`rows`
alerts or `max_bytes` of packets) it is written as one Parquet row group. So row groups stay large for scans
while memory holds one row group of Arrow data and a few small batches of packets, whatever the night's size.
gzip (ISA-L), hashing, file writes and the Parquet writer release the GIL too: this keeps both cores busy.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from alertdist.archive.parquet import ParquetPartWriter
from alertdist.archive.stream import CANDID, MTIME, ArchiveInterrupted
from alertdist.archive.tarball import TarballWriter
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.avro.codec import AlertPacketError, decode

__all__ = ["GroupWriter"]

#: on_reject(index entry, packet, reason): a packet whose record turned out malformed when decoded
Reject = Callable[[tuple, bytes, str], None]


class GroupWriter:
    """Alerts in, by `add` in candid order; `close` writes what is left; `shutdown` always, in a finally.

    Index entries are the spool's: (candid, partition, offset, position, size, mtime, crc, schema).
    """

    DECODE_THREADS = 2  # DataFusion runs without the GIL: two batches decode at once, results used in order

    def __init__(
        self,
        tarball: TarballWriter,
        table: ParquetPartWriter,
        decoder: AlertDecoder,
        *,
        rows: int,
        max_bytes: int,
        batch_bytes: int,
        on_reject: Reject,
        stop: threading.Event | None = None,
    ) -> None:
        self.tarball, self.table, self.decoder = tarball, table, decoder
        self.rows, self.max_bytes, self.batch_bytes = rows, max_bytes, batch_bytes
        self.on_reject, self.stop = on_reject, stop
        self.entries: list[tuple] = []
        self.packets: list[bytes] = []
        self.size = 0  # packet bytes in the batch being filled
        self.planned_rows = self.planned_bytes = 0  # of the row group the next batch belongs to
        self.group: list[pa.Table] = []  # decoded batches of the row group being built
        self._decoding: deque[tuple[Future, bool]] = deque()  # (decode result, does it end a row group)
        self._local = threading.local()
        self._decoders: list[AlertDecoder] = []
        self._decode_threads = ThreadPoolExecutor(self.DECODE_THREADS, thread_name_prefix="decode")
        self._tar_thread = ThreadPoolExecutor(1, thread_name_prefix="tarball")
        self._pending: Future | None = None

    def add(self, entry: tuple, packet: bytes) -> None:
        """Add one alert (written once its batch is decoded)."""
        self.entries.append(entry)
        self.packets.append(packet)
        self.size += len(packet)
        if (
            self.size >= self.batch_bytes
            or self.planned_rows + len(self.packets) >= self.rows
            or self.planned_bytes + self.size >= self.max_bytes
        ):
            self._batch()

    def close(self) -> None:
        """Write the last batch and row group, and wait until the tarball has every member."""
        self._batch(last=True)
        while self._decoding:
            self._use_oldest()
        self._wait()

    def shutdown(self) -> None:
        """Let the worker threads end (after their current batch), whether or not all went well."""
        self._decode_threads.shutdown(wait=True, cancel_futures=True)
        self._tar_thread.shutdown(wait=True)
        for decoder in self._decoders:
            decoder.close()

    def _batch(self, last: bool = False) -> None:
        """Hand the batch being filled to a decoding thread; use the oldest result if both are busy."""
        if self.stop is not None and self.stop.is_set():
            raise ArchiveInterrupted("stopped while writing; nothing was published under a final name")
        if self.packets:
            self.planned_rows += len(self.packets)
            self.planned_bytes += self.size
            ends_group = last or self.planned_rows >= self.rows or self.planned_bytes >= self.max_bytes
            if ends_group:
                self.planned_rows = self.planned_bytes = 0
            job = self._decode_threads.submit(self._decode, self.entries, self.packets)
            self._decoding.append((job, ends_group))
            self.entries, self.packets, self.size = [], [], 0
        elif last and self._decoding:
            job, _ = self._decoding.pop()
            self._decoding.append((job, True))
        while len(self._decoding) > self.DECODE_THREADS:
            self._use_oldest()

    def _use_oldest(self) -> None:
        """The oldest decoded batch: its rejects reported, its members to the tarball thread, its rows kept for
        the row group (written when the batch ends one). Batches are used in the order they were filled."""
        job, ends_group = self._decoding.popleft()
        entries, packets, table, rejected = job.result()
        for entry, packet, reason in rejected:
            self.on_reject(entry, packet, reason)
        self._wait()
        self._pending = self._tar_thread.submit(self._add_members, entries, packets)
        self.group.append(table)
        if ends_group:
            self.table.write(pa.concat_tables(self.group))  # chunks side by side: no copy, one row group
            self.group = []

    def _decoder(self) -> AlertDecoder:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:  # one per thread: each has its own DataFusion context and scratch file
            decoder = self._local.decoder = self.decoder.copy()
            self._decoders.append(decoder)
        return decoder

    def _decode(self, entries: list[tuple], packets: list[bytes]):
        """(entries, packets, table, rejected) of a batch, malformed packets left out (on a decoding thread)."""
        decoder = self._decoder()
        candids = [int(e[CANDID]) for e in entries]
        try:
            return entries, packets, decoder.decode(packets, candids), []
        except Exception as error:  # DataFusion raises plain Exceptions; the order check a RuntimeError
            malformed = {}
            for i, packet in enumerate(packets):
                try:
                    decode(packet)
                except AlertPacketError as e:
                    malformed[i] = f"the record does not decode: {e}"
            if not malformed:
                raise RuntimeError(
                    f"decoding {len(packets)} alerts (candids {candids[0]}..{candids[-1]}) for Parquet "
                    f"failed though each one decodes on its own: {error}"
                ) from error
        rejected = [(entries[i], packets[i], reason) for i, reason in malformed.items()]
        kept = [i for i in range(len(packets)) if i not in malformed]
        entries, packets = [entries[i] for i in kept], [packets[i] for i in kept]
        return entries, packets, decoder.decode(packets, [candids[i] for i in kept]), rejected

    def _add_members(self, entries: list[tuple], packets: list[bytes]) -> None:
        for entry, packet in zip(entries, packets):
            self.tarball.add(f"{int(entry[CANDID])}.avro", packet, int(entry[MTIME]))

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises the tarball thread's error here
