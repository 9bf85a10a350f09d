"""The drop folder: the live source the alert pipeline writes packet files into, and the one whose packets
must outlive a crash.

It offers ``settle(item, outcome)``, which the publisher calls only after Kafka acknowledged the packet, and only
then is the file removed (or moved to a done folder). A packet whose acknowledgement was lost in a crash is
published again on restart; that duplicate carries the same candid, and the archiver deduplicates by candid.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from alertdist.nights.dates import format_night
from alertdist.publish.files import is_packet_file, read_packet_file
from alertdist.publish.packets import DEFAULT_MAX_PACKET_BYTES, PacketSource, SourceError, SourcePacket

__all__ = ["NIGHT_DONE", "DropFolder"]

#: The file the alert pipeline writes into the drop folder when the night is over (see `DropFolder`).
NIGHT_DONE = "NIGHT_DONE"

_log = logging.getLogger("alertdist.sources")


class DropFolder(PacketSource):
    """A folder the alert pipeline writes packet files into, watched live, oldest file first.

    Picks up complete ``*.avro`` files only (writers write ``.tmp`` or dotfiles and rename, so a file is
    never read half-written), each read as `read_packet_file` reads it: no link followed out of the folder, no
    file read past ``max_bytes``. The night ends when the pipeline writes the marker file ``NIGHT_DONE``: the
    folder is scanned once more after the marker is seen, so every file written before it is published.
    Setting ``stop`` ends iteration at once (a pause: unread files stay for the next run).

    A file is settled only after Kafka acknowledged its packet: removed, or moved into ``done_folder`` when
    one is given; a rejected packet's file is moved to ``<folder>/rejected/`` so an operator can look at it
    (its bytes are also in the rejected topic, but an oversize one only in part).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        stop: threading.Event | None = None,
        done_folder: str | Path | None = None,
        wait_for_done: bool = True,
        max_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"drop folder {self.folder} does not exist or is not a folder; create it first")
        self.stop = stop or threading.Event()
        self.done_folder = Path(done_folder) if done_folder else None
        self.rejected_folder = self.folder / "rejected"
        self.wait_for_done = wait_for_done
        self.max_bytes = max_bytes
        self._in_flight: set[str] = set()
        self.settle_errors = 0

    @property
    def marker(self) -> Path:
        return self.folder / NIGHT_DONE

    def _scan(self) -> list[tuple[int, str]]:
        found = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.name in self._in_flight or not is_packet_file(entry.name):
                        continue
                    try:  # a link is judged when it is read (never followed out of the folder)
                        if entry.is_symlink() or not entry.is_dir():
                            found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
                    except FileNotFoundError:
                        continue
        except OSError as e:
            raise SourceError(f"listing drop folder {self.folder} failed: {e}") from e
        found.sort()
        return found

    def __iter__(self) -> Iterator[SourcePacket | None]:
        while not self.stop.is_set():
            done = not self.wait_for_done or self.marker.exists()  # before the scan: files older than it are seen
            found = self._scan()
            if not found:
                if done:
                    return
                yield None  # idle: the caller serves Kafka callbacks, then asks again
                continue
            for mtime_ns, name in found:
                if self.stop.is_set():
                    return
                item = read_packet_file(self.folder / name, self.folder, self.max_bytes)
                if item is None:
                    continue  # removed by someone else since the scan
                self._in_flight.add(name)
                yield replace(item, produced_ms=mtime_ns // 1_000_000)

    def settle(self, item: SourcePacket, rejected: bool) -> None:
        """Kafka has the packet: remove its file (or move it to the done or rejected folder)."""
        if item.path is None:
            return
        try:
            if rejected:
                if self.rejected_folder.is_symlink():  # never move a file out of the folder through a link
                    raise OSError(f"{self.rejected_folder} is a symbolic link; make it a plain folder")
                self.rejected_folder.mkdir(exist_ok=True)
                os.replace(item.path, self.rejected_folder / item.name)
            elif self.done_folder is not None:
                self.done_folder.mkdir(parents=True, exist_ok=True)
                os.replace(item.path, self.done_folder / item.name)
            else:
                item.path.unlink(missing_ok=True)
        except OSError as e:
            # the packet is safe in Kafka; a leftover file only means a duplicate (same candid) after a restart
            self.settle_errors += 1
            _log.warning("could not settle %s after Kafka acknowledged it: %s", item.path, e)
        finally:
            self._in_flight.discard(item.name)

    def night_closed(self, night: dt.date) -> None:
        self.retire_marker(night)

    def retire_marker(self, night: dt.date) -> None:
        """Rename ``NIGHT_DONE`` to ``NIGHT_DONE.<YYYYMMDD>`` once the night is closed, so it cannot end the next."""
        if self.marker.exists():
            os.replace(self.marker, self.folder / f"{NIGHT_DONE}.{format_night(night)}")
