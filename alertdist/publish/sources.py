"""Where alert packets come from: plain iterators of `SourcePacket`, one kind of source per function.

The publisher does not care where a packet was found; it only needs its bytes, a name to cite in a
rejection, and when the alert pipeline produced it (for latency). Every source yields packets as it finds
them, one at a time, so a night of a million alerts is never held in memory.

A live source may also yield ``None``: "nothing new right now". The publisher uses that pause to serve
Kafka's delivery callbacks instead of sleeping blind.

The drop folder is the one source whose packets must outlive a crash: it offers ``settle(item, outcome)``,
which the publisher calls only after Kafka acknowledged the packet, and only then is the file removed (or
moved to a done folder). A packet whose acknowledgement was lost in a crash is published again on restart;
that duplicate carries the same candid, and the archiver deduplicates by candid.

Nothing a source finds is trusted: a file or member is never read past the largest packet the night takes (its
head is kept for the rejection), a folder's symbolic link is never followed out of the folder, and what is not a
packet file (a tar member not named ``*.avro``, a FIFO, a link, a file too big) is yielded with its ``problem``, so
the publisher sets it aside with that reason and counts it: read = delivered + rejected holds for it too.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from alertdist.kafka.clients import MAX_MESSAGE_BYTES
from alertdist.nights.dates import SITES, format_night, night_date, unix_of_jd
from alertdist.nights.pacing import pace_by_jd

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "NIGHT_DONE",
    "DropFolder",
    "SourceError",
    "SourcePacket",
    "SourceSpec",
    "folder_packets",
    "paced",
    "require_location",
    "safe_text",
    "simulated_alerts",
    "simulated_packets",
    "tarball_packets",
]

#: The file the alert pipeline writes into the drop folder when the night is over (see `DropFolder`).
NIGHT_DONE = "NIGHT_DONE"

#: Largest packet published: the topics' limit less room for the batch header, key and headers. Sources read no
#: file or member further than this.
DEFAULT_MAX_PACKET_BYTES = MAX_MESSAGE_BYTES - 64 * 1024

#: What is kept of something set aside without being read whole (a file too big, a member that is no packet).
HEAD_BYTES = 1024 * 1024

#: The largest tar extended header (PAX record, GNU long name) read: tarfile reads one whole, so a compressed
#: header of gigabytes would be a memory bomb before any member is seen.
MAX_TAR_HEADER_BYTES = 1024 * 1024

_log = logging.getLogger("alertdist.sources")


class SourceError(RuntimeError):
    """A source could not be opened or read; the message names it."""


@dataclass(frozen=True, slots=True)
class SourcePacket:
    """One packet as found: ``name`` identifies it in logs and rejections (a file or member name).

    ``problem``: set when the source already knows this is not a publishable packet ("kind: why", the kind one of
    the publisher's reject kinds); ``packet`` then holds what was read of it, at most its head, and
    ``original_size`` its full size when that is more.
    """

    name: str
    packet: bytes
    produced_ms: int | None  # when the alert pipeline produced it (ms since epoch); None: unknown, no latency
    path: Path | None = None  # the drop-folder file it came from, settled after Kafka acknowledged it
    problem: str | None = None
    original_size: int | None = None

    @property
    def size(self) -> int:
        """The size of what was found, though only its head may have been read."""
        return len(self.packet) if self.original_size is None else self.original_size


def safe_text(text: str) -> str:
    """``text`` fit for a Kafka header and a log line: unchanged if it is printable and UTF-8, else escaped.

    A file name is bytes to the operating system: one that is not UTF-8 comes back from it with surrogates, which
    cannot be encoded, and one may hold a newline. Escaping keeps it readable and one line.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(text)[1:-1]
    return text if text.isprintable() else ascii(text)[1:-1]


def require_location(location: str | Path, storage_options: dict | None = None, *, folder: bool = False) -> None:
    """Refuse a source that is not there (or, with ``folder``, is not a folder) before anything is created for it:
    a missing file must not leave a night's topics behind."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(str(location), **(storage_options or {}))
        found = fs.isdir(path) if folder else fs.exists(path)
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot reach {location}: {e}") from e
    if not found:
        what = "folder" if folder else "file or folder"
        raise SourceError(f"{location}: no such {what}; check the path (nothing was created)")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_packet_file(name: str) -> bool:
    # writers create ".name.avro.tmp" or "name.avro.tmp" and rename: never read a file still being written
    return name.endswith(".avro") and not name.startswith(".")


def _read_at_most(stream, limit: int) -> bytes:
    """Up to ``limit`` bytes of a file object, never more in memory (a member's stream may decompress forever)."""
    parts, left = [], limit
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _too_big(name: str, size: int, max_bytes: int, head: bytes) -> str:
    return f"oversize: {name} is {size} bytes, over the limit of {max_bytes}; only its first {len(head)} kept"


def _head_size(max_bytes: int) -> int:
    """How much of something too big is read and kept: never more than the limit it broke."""
    return min(HEAD_BYTES, max_bytes)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_packet_file(path: Path, root: Path, max_bytes: int) -> SourcePacket | None:
    """The packet in the file ``path`` of the folder ``root``, read without trusting the file.

    Never follows a symbolic link out of ``root``, never opens a FIFO, socket or device (it could block or never
    end), never reads more than ``max_bytes`` + 1 bytes (a larger file is set aside as oversize with its head), and
    a file it may not read is set aside, not retried forever. What is refused comes back with its ``problem``;
    None if the file has gone since it was listed.
    """
    name = path.name
    try:
        link = os.lstat(path)
        target, found = path, link
        if stat.S_ISLNK(link.st_mode):
            target = Path(os.path.realpath(path))
            if not _inside(str(target), os.path.realpath(root)):
                problem = f"outside-folder: {name} is a symbolic link leading outside {root}; not followed"
                return SourcePacket(name, b"", link.st_mtime_ns // 1_000_000, path, problem=problem)
            found = os.stat(target)
        if not stat.S_ISREG(found.st_mode):
            problem = f"not-a-packet: {name} is not a regular file (mode {stat.filemode(found.st_mode)})"
            return SourcePacket(name, b"", found.st_mtime_ns // 1_000_000, path, problem=problem)
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None  # removed (or its link broken) since the folder was listed
    except PermissionError as e:
        problem = f"not-a-packet: {name} cannot be read ({e.strerror}); check its owner and mode"
        return SourcePacket(name, b"", None, path, problem=problem)
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a link between the check and the open
            problem = f"outside-folder: {name} became a symbolic link while being read; not followed"
            return SourcePacket(name, b"", None, path, problem=problem)
        raise SourceError(f"reading packet file {path} failed: {e}") from e
    try:
        info = os.fstat(fd)
        mtime_ms = info.st_mtime_ns // 1_000_000
        if not stat.S_ISREG(info.st_mode):
            problem = f"not-a-packet: {name} is not a regular file (mode {stat.filemode(info.st_mode)})"
            return SourcePacket(name, b"", mtime_ms, path, problem=problem)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            if info.st_size > max_bytes:
                head = _read_at_most(stream, _head_size(max_bytes))
                problem = _too_big(name, info.st_size, max_bytes, head)
                return SourcePacket(name, head, mtime_ms, path, problem=problem, original_size=info.st_size)
            data = _read_at_most(stream, max_bytes + 1)
        if len(data) > max_bytes:  # it grew since fstat
            head = data[: _head_size(max_bytes)]
            problem = _too_big(name, len(data), max_bytes, head)
            return SourcePacket(name, head, mtime_ms, path, problem=problem, original_size=len(data))
        return SourcePacket(name, data, mtime_ms, path)
    except OSError as e:
        raise SourceError(f"reading packet file {path} failed: {e}") from e
    finally:
        os.close(fd)


def folder_packets(folder: str | Path, max_bytes: int = DEFAULT_MAX_PACKET_BYTES) -> Iterator[SourcePacket]:
    """Every ``*.avro`` file of a folder, in name order (candid order for ZTF names), read one at a time (see
    `read_packet_file` for what is refused)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"packet folder {folder} does not exist or is not a folder")
    for path in sorted(p for p in folder.iterdir() if _is_packet_file(p.name) and (p.is_symlink() or not p.is_dir())):
        item = read_packet_file(path, folder, max_bytes)
        if item is not None:
            yield replace(item, path=None)  # a plain folder is not settled: its files stay


def tarball_packets(
    location: str | Path, storage_options: dict | None = None, max_bytes: int = DEFAULT_MAX_PACKET_BYTES
) -> Iterator[SourcePacket]:
    """Each ``*.avro`` member of a (gzip'd) tarball, streamed: never extracted, never loaded whole.

    ``location`` is a path or an fsspec URL (``s3://bucket/ztf_public_20180819.tar.gz``), so a night can be
    replayed straight from the archive. Folders are skipped; any other member that is not a ``*.avro`` file (a
    README, a link, a device) and any member over ``max_bytes`` is yielded with its ``problem`` and at most its
    head, never read whole: a member that decompresses to gigabytes is streamed past, not held. A gzip'd
    tarball is read to the end of its gzip stream after the last member, as only there are its CRC and length
    checked: a damaged file raises `SourceError` (after its members have been yielded), never ends quietly.
    """
    import fsspec
    from isal import igzip

    try:
        raw = fsspec.open(str(location), "rb", **(storage_options or {})).open()
    except (OSError, ValueError) as e:
        raise SourceError(f"opening tarball {location} failed: {e}") from e
    gzipped = str(location).endswith((".gz", ".tgz"))
    try:
        stream = igzip.IGzipFile(fileobj=raw, mode="rb") if gzipped else raw
        with tarfile.open(fileobj=stream, mode="r|" if gzipped else "r|*", tarinfo=_BoundedTarInfo) as tar:
            for member in tar:
                tar.members.clear()  # a streaming TarFile still keeps every TarInfo
                if member.isdir():
                    continue
                yield _member_packet(tar, member, max_bytes)
        while gzipped and stream.read(1 << 20):  # to the gzip trailer: the CRC and length are checked there
            pass
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceError(f"reading tarball {location} failed: {e}") from e
    finally:
        raw.close()


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses an extended header (PAX, GNU long name) larger than `MAX_TAR_HEADER_BYTES`."""

    def _proc_member(self, tarfile_):
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
        if self.type in extended and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.SubsequentHeaderError(
                f"an extended tar header of {self.size} bytes (more than {MAX_TAR_HEADER_BYTES}) at byte "
                f"{self.offset}: not a tarball of alert packets"
            )
        return super()._proc_member(tarfile_)


def _member_packet(tar: tarfile.TarFile, member: tarfile.TarInfo, max_bytes: int) -> SourcePacket:
    """One member as the publisher takes it; a member's mtime is when it was observed, not produced (None)."""
    base = member.name.rsplit("/", 1)[-1]
    if not member.isfile():
        kind = "link" if member.issym() or member.islnk() else "special file"
        return SourcePacket(member.name, b"", None, problem=f"not-a-packet: member {member.name} is a {kind}")
    if not _is_packet_file(base):
        head = _read_at_most(tar.extractfile(member), min(member.size, _head_size(max_bytes)))
        problem = f"not-a-packet: member {member.name} is not named *.avro ({member.size} bytes)"
        return SourcePacket(member.name, head, None, problem=problem, original_size=member.size)
    if member.size > max_bytes:
        head = _read_at_most(tar.extractfile(member), _head_size(max_bytes))
        problem = _too_big(f"member {member.name}", member.size, max_bytes, head)
        return SourcePacket(base, head, None, problem=problem, original_size=member.size)
    return SourcePacket(base, _read_at_most(tar.extractfile(member), member.size), None)


def simulated_alerts(n_alerts: int, *, night: dt.date, seed: int = 0, **simulate_options) -> Iterator:
    """`alertdist.simulate.night.simulate_night` for the night that topics call ``night``.

    The simulator names a night by the local date at its start; topics name it by the site rule (at Palomar the
    UT date, one day later). The simulator's date is chosen so that the alerts' jd fall in ``night``.
    """
    from alertdist.simulate.night import night_window, simulate_night

    palomar = SITES["palomar"]
    simulator_night = night
    for candidate in (night - dt.timedelta(days=1), night):
        evening = dt.datetime.fromtimestamp(unix_of_jd(night_window(candidate)[0]), dt.UTC)
        if night_date(evening, palomar) == night:
            simulator_night = candidate
            break
    return simulate_night(n_alerts, night=simulator_night, seed=seed, **simulate_options)


def simulated_packets(
    n_alerts: int,
    *,
    night: dt.date,
    seed: int = 0,
    speed: float | None = None,
    stop: threading.Event | None = None,
    **simulate_options,
) -> Iterator[SourcePacket]:
    """A simulated night (`alertdist.simulate`), as fast as it generates or at ``speed`` times the real cadence.

    With ``speed``, each exposure's alerts are released together when that exposure's time (its ``jd``,
    relative to the night's first exposure) comes round, as ZTF's pipeline releases them; ``produced_ms``
    is the moment of release.
    """
    alerts = simulated_alerts(n_alerts, night=night, seed=seed, **simulate_options)
    if speed:
        alerts = pace_by_jd(alerts, speed, stop=stop)
    for alert in alerts:
        if stop is not None and stop.is_set():
            return
        yield SourcePacket(f"{alert.candid}.avro", alert.packet, _now_ms())


def paced(
    items: Iterable[SourcePacket], *, rate_per_minute: float, stop: threading.Event | None = None
) -> Iterator[SourcePacket]:
    """Release packets evenly at ``rate_per_minute``, as an alert pipeline would produce them.

    Each ``produced_ms`` is the packet's scheduled time, not the moment the consumer of this iterator got round
    to asking for it: a publisher that falls behind shows its backlog as latency instead of hiding it. For
    latency measurements: pre-generate a night in memory, then let this play the alert pipeline.
    """
    if rate_per_minute <= 0:
        raise ValueError(f"rate_per_minute must be positive, got {rate_per_minute}")
    interval = 60.0 / rate_per_minute
    start, start_ms = time.monotonic(), time.time() * 1000.0
    for i, item in enumerate(items):
        if _wait_until(start + i * interval, stop):
            return
        yield replace(item, produced_ms=int(start_ms + i * interval * 1000.0))


def _not_empty(items: Iterator[SourcePacket], location: str) -> Iterator[SourcePacket]:
    """``items``, and an error at the end if there were none: a night's tarball with no member publishes nothing,
    and must not close an empty night as if it were whole."""
    found = False
    for item in items:
        found = True
        yield item
    if not found:
        raise SourceError(f"tarball {location} holds no member at all; nothing was published (is it the right file?)")


def _wait_until(due: float, stop: threading.Event | None) -> bool:
    """Sleep until ``due`` (monotonic); True if ``stop`` was set meanwhile."""
    delay = due - time.monotonic()
    if delay > 0.0005:
        if stop is not None:
            return stop.wait(delay)
        time.sleep(delay)
    return stop is not None and stop.is_set()


class DropFolder:
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
                    if entry.name in self._in_flight or not _is_packet_file(entry.name):
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

    def retire_marker(self, night: dt.date) -> None:
        """Rename ``NIGHT_DONE`` to ``NIGHT_DONE.<YYYYMMDD>`` once the night is closed, so it cannot end the next."""
        if self.marker.exists():
            os.replace(self.marker, self.folder / f"{NIGHT_DONE}.{format_night(night)}")


@dataclass(frozen=True)
class SourceSpec:
    """Where a night's packets come from; the CLI's options and a flow's one string both become one of these.

    ``kind``: ``drop-folder`` (watched live until ``NIGHT_DONE``), ``folder`` (every packet file, once),
    ``tarball`` (a path or URL, streamed) or ``simulate`` (``alerts`` simulated packets, ``seed``, released at
    ``speed`` x the real cadence or evenly at ``rate_per_minute``).
    """

    kind: str
    location: str = ""
    alerts: int = 0
    seed: int = 0
    speed: float | None = None
    rate_per_minute: float | None = None
    done_folder: str | None = None

    KINDS = ("drop-folder", "folder", "tarball", "simulate")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise SourceError(f"source kind {self.kind!r} is not one of {', '.join(self.KINDS)}")

    @classmethod
    def parse(cls, spec: str, *, speed: float | None = None, done_folder: str | None = None) -> SourceSpec:
        """A source from one string (flows, deployments): ``simulate:N`` or ``simulate:N:SEED``, ``folder:PATH``,
        a path or URL ending ``.tar``, ``.tar.gz`` or ``.tgz``, or any other path: a live drop folder."""
        if spec.startswith("simulate:"):
            parts = spec.split(":")
            try:
                alerts, seed = int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
            except (IndexError, ValueError) as e:
                raise SourceError(f"source {spec!r}: expected simulate:N or simulate:N:SEED") from e
            return cls("simulate", alerts=alerts, seed=seed, speed=speed)
        if spec.startswith("folder:"):
            return cls("folder", spec.removeprefix("folder:"))
        if spec.endswith((".tar", ".tar.gz", ".tgz")):
            return cls("tarball", spec)
        return cls("drop-folder", spec, done_folder=done_folder)

    def check(self, storage_options: dict | None = None) -> None:
        """Refuse a folder or tarball that is not there, before the night's topics are created for it."""
        if self.kind != "simulate":
            require_location(self.location, storage_options, folder=self.kind != "tarball")

    @property
    def pace(self) -> str:
        """How fast the packets come, in words, so that a rate and latencies are read against it."""
        if self.kind == "drop-folder":
            return "as the alert pipeline writes them into the drop folder"
        if self.rate_per_minute:
            return f"evenly at {self.rate_per_minute:g} alerts/minute"
        if self.kind == "simulate" and self.speed:
            return f"the simulated night's own cadence {self.speed:g}x faster (an hour of night in {60 / self.speed:.3g} min)"
        return "as fast as the source gives them"

    @property
    def total(self) -> int | None:
        """How many packets the source holds, where that is known before reading it."""
        if self.kind == "simulate":
            return self.alerts
        if self.kind == "folder":
            return sum(1 for p in Path(self.location).glob("*.avro") if p.name[0] != ".")
        return None

    def open(
        self,
        night: dt.date,
        *,
        stop: threading.Event | None = None,
        storage_options: dict | None = None,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    ):
        """The packets, as the publisher takes them; no file or member is read past ``max_packet_bytes``."""
        if self.kind == "drop-folder":
            return DropFolder(self.location, stop=stop, done_folder=self.done_folder, max_bytes=max_packet_bytes)
        if self.kind == "folder":
            return folder_packets(self.location, max_packet_bytes)
        if self.kind == "tarball":
            return _not_empty(tarball_packets(self.location, storage_options, max_packet_bytes), self.location)
        packets = simulated_packets(self.alerts, night=night, seed=self.seed, speed=self.speed, stop=stop)
        return paced(packets, rate_per_minute=self.rate_per_minute, stop=stop) if self.rate_per_minute else packets
