"""Where alert packets come from: one kind of source per function, each a `PacketSource` of `SourcePacket`s.

The publisher does not care where a packet was found; it only needs its bytes, a name to cite in a
rejection, and when the alert pipeline produced it (for latency). Every source yields packets as it finds
them, one at a time, so a night of a million alerts is never held in memory.

A live source may also yield ``None``: "nothing new right now". The publisher uses that pause to serve
Kafka's delivery callbacks instead of sleeping blind.

The drop folder (`alertdist.publish.drop_folder`) is the one source whose packets must outlive a crash: it
settles each file only after Kafka acknowledged its packet.

Nothing a source finds is trusted: a file or member is never read past the largest packet the night takes (its
head is kept for the rejection), a folder's symbolic link is never followed out of the folder, and what is not a
packet file (a tar member not named ``*.avro``, a FIFO, a link, a file too big) is yielded with its ``problem``, so
the publisher sets it aside with that reason and counts it: read = delivered + rejected holds for it too.
"""

from __future__ import annotations

import datetime as dt
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from alertdist.nights.dates import SITES, night_date, unix_of_jd
from alertdist.nights.pacing import pace_by_jd
from alertdist.publish.drop_folder import NIGHT_DONE, DropFolder
from alertdist.publish.files import head_size, is_packet_file, read_at_most, read_packet_file, too_big
from alertdist.publish.packets import (
    DEFAULT_MAX_PACKET_BYTES,
    Packets,
    PacketSource,
    SourceError,
    SourcePacket,
    safe_text,
)

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "NIGHT_DONE",
    "DropFolder",
    "PacketSource",
    "Packets",
    "SourceError",
    "SourcePacket",
    "SourceSpec",
    "folder_packets",
    "paced",
    "read_packet_file",
    "require_location",
    "safe_text",
    "simulated_alerts",
    "simulated_packets",
    "tarball_packets",
]

#: The largest tar extended header (PAX record, GNU long name) read: tarfile reads one whole, so a compressed
#: header of gigabytes would be a memory bomb before any member is seen.
MAX_TAR_HEADER_BYTES = 1024 * 1024


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


def folder_packets(folder: str | Path, max_bytes: int = DEFAULT_MAX_PACKET_BYTES) -> Iterator[SourcePacket]:
    """Every ``*.avro`` file of a folder, in name order (candid order for ZTF names), read one at a time (see
    `read_packet_file` for what is refused)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"packet folder {folder} does not exist or is not a folder")
    for path in sorted(p for p in folder.iterdir() if is_packet_file(p.name) and (p.is_symlink() or not p.is_dir())):
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
    if not is_packet_file(base):
        head = read_at_most(tar.extractfile(member), min(member.size, head_size(max_bytes)))
        problem = f"not-a-packet: member {member.name} is not named *.avro ({member.size} bytes)"
        return SourcePacket(member.name, head, None, problem=problem, original_size=member.size)
    if member.size > max_bytes:
        head = read_at_most(tar.extractfile(member), head_size(max_bytes))
        problem = too_big(f"member {member.name}", member.size, max_bytes, head)
        return SourcePacket(base, head, None, problem=problem, original_size=member.size)
    return SourcePacket(base, read_at_most(tar.extractfile(member), member.size), None)


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
            hour = f"{60 / self.speed:.3g} min"
            return f"the simulated night's own cadence {self.speed:g}x faster (an hour of night in {hour})"
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
    ) -> PacketSource:
        """The packets, as the publisher takes them; no file or member is read past ``max_packet_bytes``."""
        if self.kind == "drop-folder":
            return DropFolder(self.location, stop=stop, done_folder=self.done_folder, max_bytes=max_packet_bytes)
        if self.kind == "folder":
            return Packets(folder_packets(self.location, max_packet_bytes))
        if self.kind == "tarball":
            return Packets(_not_empty(tarball_packets(self.location, storage_options, max_packet_bytes), self.location))
        packets = simulated_packets(self.alerts, night=night, seed=self.seed, speed=self.speed, stop=stop)
        return Packets(
            paced(packets, rate_per_minute=self.rate_per_minute, stop=stop) if self.rate_per_minute else packets
        )
