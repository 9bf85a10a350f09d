"""Archive one closed night: each programme topic to a tarball and a Parquet file, then the manifest and MD5SUMS.

Everything date- and name-dependent is decided here; the stream, tarball and Parquet modules never think
about nights. A programme is read into a local spool (`read_programme`), then written from the spool in candid
order by `groups.GroupWriter` (`write_programme`): the tarball and the Parquet file grow together, and memory
holds one Parquet row group (`row_group_rows` alerts or `row_group_bytes` of packets, whichever comes first) as
Arrow data plus a few batches of packets (`batch_bytes`), whatever the night's size. `archive_night` overlaps the
stages: two programmes are read from Kafka at a time (the smallest first; it is written last: see `_schedule`),
and a written programme is read back while the next is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from alertdist.archive.groups import GroupWriter
from alertdist.archive.index import IndexingTarball, index_programme
from alertdist.archive.manifest import NightManifest, ProgrammeArchive, manifest_path
from alertdist.archive.parquet import ParquetPartWriter, parquet_path
from alertdist.archive.setaside import rejects_path, write_set_aside
from alertdist.archive.storage import Destination
from alertdist.archive.stream import (
    OFFSET,
    PARTITION,
    SCHEMA,
    Duplicates,
    RejectedMessage,
    Spool,
    TopicRead,
    spool_topic,
)
from alertdist.archive.tarball import MD5SUMS, md5sums_text, parse_md5sums, tarball_name
from alertdist.archive.verify import verify_night, verify_programme
from alertdist.avro.arrow import night_layout
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.kafka.errors import KafkaOperationError
from alertdist.nights.dates import format_night
from alertdist.nights.state import NightState, read_night_state
from alertdist.nights.topics import TopicNaming

__all__ = [
    "ArchiveOptions",
    "NightAbortedError",
    "NightNotClosedError",
    "ProgrammeRead",
    "archive_night",
    "closed_state",
    "finish_night",
    "night_programmes",
    "read_programme",
    "write_programme",
]

_PROGRESS_EVERY = 1000
_READ_AHEAD = 2  # programmes read from Kafka at once by archive_night
#: progress(stage, done, total): stage "read" (messages from Kafka) or "write" (alerts written)
Progress = Callable[[str, int, int], None]


class NightNotClosedError(KafkaOperationError):
    """The night has no closing record yet: archiving it now could miss alerts. Transient: it may close later."""

    def __init__(self, message: str, *, transient: bool = True):
        super().__init__(message, transient=transient)


@dataclass(frozen=True)
class ArchiveOptions:
    """How to archive; the defaults suit a production night."""

    storage_options: dict | None = None
    work_dir: str | None = None  # where the spool goes (needs disk for one programme's night); default: $TMPDIR
    row_group_rows: int = 10_000
    row_group_bytes: int = 128 * 1024 * 1024  # of packets (~1,700 ZTF alerts); held as Arrow data while built
    batch_bytes: int = 16 * 1024 * 1024  # packets decoded and gzipped at a time
    engine: str = "auto"  # Avro decoder for Parquet: auto | datafusion | fastavro
    run_size: int = 100_000  # index entries sorted in memory at once (48 bytes each)


class NightAbortedError(RuntimeError):
    """The night was aborted (its publishing failed): archived, it would pass for whole. Not transient: it stays
    aborted; archive it with ``partial=True`` (``--partial``) to keep what was published, marked as partial."""


def closed_state(bootstrap_servers: str, naming: TopicNaming, night: dt.date, *, partial: bool = False) -> NightState:
    """The night's closing record; an aborted night's record only with ``partial`` (else NightAbortedError)."""
    state = read_night_state(bootstrap_servers, naming, night)
    if state is not None and state.aborted:
        if partial:
            return state
        raise NightAbortedError(
            f"night {format_night(night)} of {naming.survey} was aborted "
            f"({state.counts.get('aborted', 'no reason given')}):"
            " its archive would be partial. Publish the night again and close it, or archive what was published "
            "with --partial (the manifest then says the archive is partial)"
        )
    if state is None or not state.closed:
        found = "never opened" if state is None else f"is {state.state!r}"
        raise NightNotClosedError(
            f"night {format_night(night)} of {naming.survey} {found} in {naming.nights_topic}: archive it once the "
            "publisher has closed it (the closing record carries the offsets where the night ends)"
        )
    return state


def night_programmes(
    naming: TopicNaming, night: dt.date, state: NightState, wanted: Iterable[int] | None = None
) -> list[int]:
    """The programmes to archive: those asked for (each must have closing offsets) or all the night has."""
    if wanted:
        missing = [p for p in wanted if naming.programme_topic(night, p) not in state.end_offsets]
        if missing:
            raise NightNotClosedError(
                f"the closing record of night {format_night(night)} has no offsets for programmes "
                f"{missing}; programmes it has: {night_programmes(naming, night, state)}"
            )
        return sorted(wanted)
    return [p for p in sorted(naming.programmes) if naming.programme_topic(night, p) in state.end_offsets]


@dataclass
class ProgrammeRead:
    """A programme topic read into its spool: what `write_programme` needs."""

    programid: int
    name: str
    night: dt.date
    survey: str
    spool: Spool
    topic: TopicRead


def read_programme(
    bootstrap_servers: str,
    naming: TopicNaming,
    night: dt.date,
    programid: int,
    state: NightState,
    folder: Path,
    options: ArchiveOptions = ArchiveOptions(),
    *,
    stop=None,
    progress: Progress | None = None,
) -> ProgrammeRead:
    """Copy one programme topic of a closed night into a spool in ``folder`` (closed by the caller)."""
    topic = naming.programme_topic(night, programid)
    if topic not in state.end_offsets:
        raise NightNotClosedError(f"the closing record of night {format_night(night)} has no offsets for {topic}")
    end_offsets = state.end_offsets[topic]
    due = sum(end_offsets.values())
    spool = Spool(folder, run_size=options.run_size)
    try:
        read = spool_topic(
            bootstrap_servers,
            topic,
            end_offsets,
            spool,
            stop=stop,
            progress=progress and (lambda n: progress("read", n, due)),
        )
        spool.finish()
    except BaseException:
        spool.close()
        raise
    return ProgrammeRead(programid, naming.programmes[programid], night, naming.survey, spool, read)


def write_programme(
    read: ProgrammeRead,
    dest_url: str,
    options: ArchiveOptions = ArchiveOptions(),
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> ProgrammeArchive:
    """Write a spooled programme's tarball and Parquet file (atomically) and account for every message."""
    spool, topic_read = read.spool, read.topic
    dest = Destination(dest_url, options.storage_options)
    tar_path, pq_path = tarball_name(read.survey, read.name, read.night), parquet_path(read.night, read.programid)
    for path in (tar_path, pq_path):
        dest.remove_stale_temporaries(path)
    duplicates = Duplicates()
    with (
        dest.open_atomic(tar_path, background=True) as tar_out,
        dest.open_atomic(pq_path, background=True, md5=False) as pq_out,
    ):  # md5 goes to MD5SUMS: tarballs
        tarball, rows = _write_files(read, tar_out, pq_out, duplicates, options, stop=stop, progress=progress)
    set_aside = write_set_aside(dest, rejects_path(read.survey, read.name, read.night, read.programid), spool)
    if progress:
        progress("write", spool.count, spool.count)  # every message handled (some were duplicates or rejected)
    counts = {
        "read": topic_read.read,
        "written": rows,
        "duplicates": duplicates.dropped,
        "conflicting_duplicates": duplicates.conflicting_count,
        "rejected": len(topic_read.rejected),
    }
    _check_counts(topic_read, counts, tarball.members, 0 if set_aside is None else set_aside["members"])
    archive = ProgrammeArchive(
        programid=read.programid,
        name=read.name,
        topic=topic_read.topic,
        partitions={
            p: {"first_offset": r.first_offset, "end_offset": r.end_offset, "read": r.read}
            for p, r in sorted(topic_read.partitions.items())
        },
        counts=counts,
        schema_versions=dict(sorted(spool.versions.items())),
        files={"tarball": vars(tar_out.digest(tar_path)), "parquet": vars(pq_out.digest(pq_path))},
        rejected=[vars(r) for r in sorted(topic_read.rejected, key=lambda r: (r.partition, r.offset))],
        conflicting_duplicates=duplicates.conflicting,
        set_aside=set_aside,
    )
    archive.index = index_programme(dest, read.night, archive, tarball)  # the service's index: see archive.index
    return archive


def _write_files(
    read: ProgrammeRead,
    tar_out,
    pq_out,
    duplicates: Duplicates,
    options: ArchiveOptions,
    *,
    stop: threading.Event | None,
    progress: Progress | None,
) -> tuple[IndexingTarball, int]:
    """Write the spool's unique messages, in candid order, to the tarball and the Parquet file together; set aside
    those whose writer schema does not fit the night's table. The tarball (for its index) and the rows written."""
    spool = read.spool
    headers = sorted(spool.headers)  # sorted: the file's header list does not depend on the order read
    columns, refused = night_layout(headers)
    refused_ids = {spool.headers[h]: reason for h, reason in refused.items()}  # by the index entries' SCHEMA
    decoder = AlertDecoder(columns, spool.folder, options.engine, [h for h in headers if h not in refused])
    tarball, table = IndexingTarball(tar_out), ParquetPartWriter(pq_out, decoder.schema)
    reject = functools.partial(_reject, read)
    groups = GroupWriter(
        tarball,
        table,
        decoder,
        rows=options.row_group_rows,
        max_bytes=options.row_group_bytes,
        batch_bytes=options.batch_bytes,
        on_reject=reject,
        stop=stop,
    )
    try:
        for done, entry in enumerate(spool.unique(duplicates), 1):
            if entry[SCHEMA] in refused_ids:
                reject(entry, spool.read(entry), refused_ids[entry[SCHEMA]])
                continue
            groups.add(entry, spool.read(entry))
            if progress and done % _PROGRESS_EVERY == 0:
                progress("write", done, spool.count)
        groups.close()
    finally:
        groups.shutdown()
    tarball.close()
    table.close()
    return tarball, table.rows


def _reject(read: ProgrammeRead, entry, packet: bytes, reason: str) -> None:
    """Account for a message left out of the files, and keep its bytes for the set-aside file."""
    partition, offset = int(entry[PARTITION]), int(entry[OFFSET])
    read.topic.rejected.append(RejectedMessage(partition, offset, len(packet), reason))
    read.spool.set_aside(packet, partition, offset, reason)
    read.spool.forget(packet)


def _check_counts(topic_read: TopicRead, counts: dict[str, int], members: int, kept_apart: int) -> None:
    """Every message read is written, a duplicate, or rejected and kept apart: else refuse to publish."""
    if (
        counts["read"] != counts["written"] + counts["duplicates"] + counts["rejected"]
        or members != counts["written"]
        or kept_apart != counts["rejected"] + counts["conflicting_duplicates"]
    ):
        raise RuntimeError(
            f"archiving {topic_read.topic}: counts do not add up ({counts}, {members} tar "
            f"members, {kept_apart} set aside); this is a bug, please report it with the manifest"
        )


def finish_night(
    naming: TopicNaming,
    night: dt.date,
    dest_url: str,
    programmes: list[ProgrammeArchive],
    storage_options: dict | None = None,
    state: NightState | None = None,
) -> NightManifest:
    """Write the night's manifest and put its tarballs' md5 into the destination's MD5SUMS (atomically).

    ``state``: the closing record archived from; an aborted one makes the manifest say the archive is partial."""
    label = format_night(night)
    dest = Destination(dest_url, storage_options)
    manifest = NightManifest(naming.survey, label, {a.programid: a for a in programmes})
    if state is not None and state.aborted:
        manifest = replace(
            manifest, night_state=state.state, partial=True, aborted_reason=str(state.counts.get("aborted", ""))
        )
    dest.write_bytes(manifest_path(naming.survey, label), manifest.to_json())
    # read-modify-write: archive nights one at a time per destination (the flow does) or a line can be lost
    entries = parse_md5sums(dest.read_bytes(MD5SUMS).decode()) if dest.exists(MD5SUMS) else {}
    for archive in programmes:
        entries[archive.files["tarball"]["path"]] = archive.files["tarball"]["md5"]
    dest.write_bytes(MD5SUMS, md5sums_text(entries).encode())
    return manifest


def archive_night(
    bootstrap_servers: str,
    naming: TopicNaming,
    night: dt.date,
    dest_url: str,
    options: ArchiveOptions = ArchiveOptions(),
    *,
    programmes: Iterable[int] | None = None,
    verify: bool = True,
    partial: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[int, str, int, int], None] | None = None,
) -> NightManifest:
    """Archive a closed night to ``dest_url`` and (by default) verify what was written; returns the manifest.

    ``partial``: an aborted night too, up to where its stream stopped; its manifest says it is partial.
    ``progress(programid, stage, done, total)`` is called as the work advances.
    """
    state = closed_state(bootstrap_servers, naming, night, partial=partial)
    wanted = night_programmes(naming, night, state, programmes)
    read_order, write_order = _schedule(
        wanted, {p: sum(state.end_offsets[naming.programme_topic(night, p)].values()) for p in wanted}
    )
    folders = {p: Path(tempfile.mkdtemp(dir=options.work_dir, prefix="alertdist-archive-")) for p in wanted}
    try:
        stages = _Stages(bootstrap_servers, naming, night, state, dest_url, options, folders, stop, progress)
        results, checked = stages.run(read_order, write_order, verify=verify)
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
    results.sort(key=lambda a: a.programid)
    manifest = finish_night(naming, night, dest_url, results, options.storage_options, state)
    if verify:
        verify_night(dest_url, manifest, state, options.storage_options, checked=checked)
    return manifest


@dataclass
class _Stages:
    """The night's stages, overlapped: programmes are read from Kafka into their spools two at a time (reading
    uses about one core, writing the other), written one by one, and each written programme is read back while
    the next is written. A failure of the writer stops the read-ahead too."""

    bootstrap_servers: str
    naming: TopicNaming
    night: dt.date
    state: NightState
    dest_url: str
    options: ArchiveOptions
    folders: dict[int, Path]  # each programme's spool folder
    stop: threading.Event | None
    progress: Callable[[int, str, int, int], None] | None

    def run(
        self, read_order: list[int], write_order: list[int], *, verify: bool
    ) -> tuple[list[ProgrammeArchive], dict[int, list[str]]]:
        """The programmes written (in write order) and, with ``verify``, the problems each read-back found."""
        abandon = threading.Event()
        reader_stop = _Either(self.stop, abandon)
        results, checks = [], {}
        with (
            ThreadPoolExecutor(_READ_AHEAD, thread_name_prefix="read-ahead") as reader,
            ThreadPoolExecutor(1, thread_name_prefix="verify-programme") as verifier,
        ):
            reads: dict[int, Future] = {}  # read or being read, not yet written: at most one more than read ahead
            unread = iter(read_order)
            try:
                for programid in write_order:
                    while len(reads) <= _READ_AHEAD and (next_read := next(unread, None)) is not None:
                        reads[next_read] = reader.submit(self._read, next_read, reader_stop)
                    archive = self._write(reads[programid].result())
                    del reads[programid]
                    results.append(archive)
                    if verify:
                        checks[programid] = verifier.submit(self._verify, archive)
            except BaseException:
                abandon.set()
                _close_spools(reads.values())
                raise
            return results, {programid: check.result() for programid, check in checks.items()}

    def _report(self, programid: int) -> Progress | None:
        return self.progress and functools.partial(self.progress, programid)

    def _read(self, programid: int, stop: _Either) -> ProgrammeRead:
        return read_programme(
            self.bootstrap_servers,
            self.naming,
            self.night,
            programid,
            self.state,
            self.folders[programid],
            self.options,
            stop=stop,
            progress=self._report(programid),
        )

    def _write(self, spooled: ProgrammeRead) -> ProgrammeArchive:
        try:
            return write_programme(
                spooled, self.dest_url, self.options, stop=self.stop, progress=self._report(spooled.programid)
            )
        finally:
            spooled.spool.close()

    def _verify(self, archive: ProgrammeArchive) -> list[str]:
        dest = Destination(self.dest_url, self.options.storage_options)
        return verify_programme(dest, archive, self.state, checksum="crc32")


def _close_spools(reads: Iterable[Future]) -> None:
    """Cancel the reads not started; close the spools of those that were (whether they finished or failed)."""
    for pending in reads:
        if not pending.cancel():
            with contextlib.suppress(BaseException):
                pending.result().spool.close()


def _schedule(programmes: list[int], sizes: dict[int, int]) -> tuple[list[int], list[int]]:
    """(read order, write order). Writing, the slow stage, starts once one programme is read, and the night ends
    with the read-back of the last one written, which nothing runs beside: so the smallest programme is read first
    (quickly, freeing its reader for a big one) and written last, and the others are written smallest first.
    On a ZTF night of 50/40/10 % writing starts once about half the night is read, not ~0.9 of it."""
    by_size = sorted(programmes, key=lambda p: (sizes[p], p))
    if len(by_size) < 3:
        return by_size, by_size
    return by_size, by_size[1:] + by_size[:1]


class _Either:
    """Set when either event is (the read-ahead stops on the user's signal or on a failure of the writer)."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
