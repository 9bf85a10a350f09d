"""Read an archived night as a stream: a tarball's packets, or a Parquet dataset's rows rebuilt into packets.

Tarballs (UW's or ours) are streamed member by member through `alertdist.publish.sources.tarball_packets` (local path,
``s3://`` or ``http(s)://`` via fsspec): never extracted, never loaded whole. Each member is checked with
`codec.peek`; a member that is not a valid alert packet is reported with its name and skipped, and counted,
so one bad member never costs the rest of the night. A damaged *stream* (a truncated download, a gzip CRC
error) cannot be read past and raises `ArchiveReadError` with the counts so far: verify downloads first
(`alertdist.access.download_night`).

The Parquet dataset (``parquet/night=YYYYMMDD/programid=N/*.parquet``, see `alertdist.archive.parquet`) is opened
with `pyarrow.dataset`, so a query reads only the columns and row groups it needs. For replays each file is read
with its own columns, and its rows are turned back into alert records (`alertdist.avro.arrow.RowRebuilder`: the
inverse of the column layout, fitted to the writer schema in the row's packet header) and rebuilt with
`codec.rebuild`: the packets as archived, byte for byte, whatever their schema version.

`open_sources` puts it together for replays and offline filters: tarballs, Parquet files or datasets, or an
archive root and a night, merged into one candid-ordered stream.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from alertdist.avro import codec
from alertdist.avro.arrow import RebuiltRow, RowRebuilder, SchemaMergeError, unify_schemas
from alertdist.publish.sources import SourceError, tarball_packets

__all__ = [
    "ArchiveReadError",
    "ArchivedAlert",
    "ReadCounts",
    "alerts_from",
    "is_tarball",
    "merge_by_candid",
    "open_dataset",
    "open_sources",
    "packets_for_batch",
    "parquet_alerts",
    "read_columns",
    "read_table",
    "tarball_alerts",
]

PARTITIONING = ds.partitioning(pa.schema([("night", pa.string()), ("programid", pa.int32())]), flavor="hive")
_PARTITION_ONLY = ("night",)  # hive keys that are not alert columns (programid is also candidate.programid)
_KEEP_BAD = 100  # bad members named in the counts (all are logged)
_log = logging.getLogger("alertdist.readers")


class ArchiveReadError(RuntimeError):
    """An archive source could not be read to its end; ``counts`` says how far it got."""

    def __init__(self, message: str, counts: ReadCounts | None = None):
        super().__init__(message)
        self.counts = counts


@dataclass(frozen=True, slots=True)
class ArchivedAlert:
    """One alert read back: its member (or row) name, the packet bytes, and the routing facts `codec.peek` gives."""

    name: str
    packet: bytes
    info: codec.PacketInfo


@dataclass
class ReadCounts:
    """Every member or row read is either good or bad: ``read == good + bad``."""

    source: str
    good: int = 0
    bad: int = 0
    bytes: int = 0
    bad_members: list[tuple[str, str]] = field(default_factory=list)  # (name, reason), the first 100

    @property
    def read(self) -> int:
        return self.good + self.bad

    def add_bad(self, name: str, reason: str) -> None:
        self.bad += 1
        if len(self.bad_members) < _KEEP_BAD:
            self.bad_members.append((name, reason))
        _log.warning("%s: skipping %s: %s", self.source, name, reason)

    def summary(self) -> str:
        return f"{self.source}: {self.good} good, {self.bad} bad of {self.read} read"


def is_tarball(location: str) -> bool:
    return str(location).endswith((".tar", ".tar.gz", ".tgz"))


# ------------------------------------------------------------------------------------------------- tarballs


def tarball_alerts(
    location: str, *, storage_options: dict | None = None, counts: ReadCounts | None = None
) -> Iterator[ArchivedAlert]:
    """The valid alert packets of a tarball, in member order, bytes unchanged; bad members counted and skipped.

    Pass a `ReadCounts` to see the good and bad counts as the stream advances (and after it ends).
    """
    counts = counts if counts is not None else ReadCounts(str(location))
    last = "(before the first member)"
    try:
        for item in tarball_packets(location, storage_options):
            last = item.name
            if item.problem is not None:  # not a packet file, or too big to read: set aside unread
                counts.add_bad(item.name, item.problem)
                continue
            try:
                info = codec.peek(item.packet)
            except codec.AlertPacketError as e:
                counts.add_bad(item.name, f"not a valid alert packet: {e}")
                continue
            problem = codec.info_problem(info)  # NaN jd, negative candid, ...: no stage could compute with it
            if problem is not None:
                counts.add_bad(item.name, f"implausible: {problem}")
                continue
            counts.good += 1
            counts.bytes += len(item.packet)
            yield ArchivedAlert(item.name, item.packet, info)
    except SourceError as e:
        if isinstance(e.__cause__, FileNotFoundError):  # missing, not damaged
            raise ArchiveReadError(f"{location}: not found; check the path or URL", counts) from e
        raise ArchiveReadError(
            f"{e}; the stream broke after member {last} ({counts.good} good and {counts.bad} bad members read). "
            "The file is damaged or incomplete: download it again (alertdist download verifies checksums)",
            counts,
        ) from e


# -------------------------------------------------------------------------------------------------- Parquet


def _dataset_location(location: str, fs) -> str:
    """An archive root holds the dataset under ``parquet/``; anything else is taken as the dataset itself."""
    root = location.rstrip("/")
    if not root.endswith(".parquet") and fs.isdir(f"{root}/parquet"):
        return f"{root}/parquet"
    return root


def open_dataset(
    location: str,
    *,
    storage_options: dict | None = None,
    filter: ds.Expression | None = None,
    unify: bool = True,
) -> ds.Dataset:
    """A night's (or a whole archive's) Parquet dataset, hive-partitioned by ``night`` and ``programid``.

    ``location``: an archive root, its ``parquet/`` folder, a ``night=...`` folder, or one ``.parquet`` file;
    local or any fsspec URL. The footer of every file is read to make the dataset's schema (`unify_schemas`:
    nights of any schema versions, and archives written before every column was nullable, read as one table),
    only of the files whose ``night``/``programid`` can match ``filter`` when one is given (those are the only
    files in the dataset then). ``unify=False``: the first file's schema, no footer read (for readers that read
    each file with its own schema). Rows are read only when a scan asks for them.
    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(str(location), **(storage_options or {}))
        path = _dataset_location(path, fs)
        base = path.split("/night=", 1)[0] if "/night=" in path else None
        options = {"filesystem": fs, "format": "parquet", "partitioning": PARTITIONING, "partition_base_dir": base}
        found = ds.dataset(path, **options)
        if not unify:
            return found
        fragments = list(found.get_fragments() if filter is None else found.get_fragments(filter=filter))
        schemas = [f.physical_schema for f in fragments] or [found.schema]  # none match: still its columns
        schema = unify_schemas([*schemas, PARTITIONING.schema])
        return ds.dataset([f.path for f in fragments], schema=schema, **options)
    except SchemaMergeError as e:
        raise ArchiveReadError(
            f"the Parquet files at {location} cannot be read as one table: {e}; read the nights apart"
        ) from e
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ArchiveReadError(
            f"opening the Parquet dataset at {location} failed: {e}; give an archive root, "
            "its parquet/ folder or a .parquet file"
        ) from e


def read_table(
    location: str,
    columns: list[str] | None = None,
    filter: ds.Expression | None = None,
    *,
    storage_options: dict | None = None,
) -> pa.Table:
    """Only ``columns`` of the rows matching ``filter``, e.g.
    ``read_table(url, ["objectId", "magpsf"], (ds.field("magpsf") < 18) & (ds.field("drb") > 0.9))``."""
    dataset = open_dataset(location, storage_options=storage_options, filter=filter)
    return dataset.to_table(columns=columns, filter=filter)


def read_columns(location: str, columns: list[str] | None = None, *, storage_options: dict | None = None) -> pa.Table:
    """One Parquet file's rows with only ``columns`` (all when None): a top-level name reads that column whole,
    ``parent.child`` one leaf of a struct or list of structs (``prv_candidates.jd``), so a filter of the history
    reads a small part of it. Raises `ArchiveReadError` for a damaged file or a column it does not have."""
    import fsspec

    try:
        with fsspec.open(str(location), "rb", **(storage_options or {})) as f:
            parquet = pq.ParquetFile(f)
            return parquet.read(columns=None if columns is None else _leaf_paths(parquet, columns, location))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ArchiveReadError(
            f"reading {location} failed: {e}; the file is damaged or incomplete: download or archive it again"
        ) from e


def _leaf_paths(parquet: pq.ParquetFile, columns: list[str], location: str) -> list[str]:
    top = set(parquet.schema_arrow.names)
    leaves = {parquet.schema.column(i).path for i in range(len(parquet.schema))}
    paths = []
    for name in columns:
        parent, _, child = name.partition(".")
        found = [name] if name in top else []
        if child and parent in top:
            found = [p for p in (f"{parent}.list.element.{child}", f"{parent}.list.item.{child}", name) if p in leaves]
        if not found:
            raise ArchiveReadError(f"{location} has no column {name!r} (top-level columns: {', '.join(sorted(top))})")
        paths.append(found[0])
    return paths


def _fragment_rows(fragment, dataset: ds.Dataset, filter, batch_rows: int) -> Iterator[RebuiltRow]:
    """A file's rows as records, read with the file's own columns (lossless, whatever other files hold)."""
    physical = fragment.physical_schema
    try:
        rebuilder = RowRebuilder(physical.metadata)
    except codec.AlertPacketError as e:
        raise ArchiveReadError(f"{fragment.path}: {e}; the file is damaged: archive the night again") from e
    partitions = [f for f in dataset.schema if f.name in _PARTITION_ONLY and f.name not in physical.names]
    schema = pa.schema([*physical, *partitions])
    columns = [n for n in physical.names if n not in _PARTITION_ONLY]
    for batch in fragment.to_batches(schema=schema, columns=columns, filter=filter, batch_size=batch_rows):
        for row in batch.to_pylist():
            yield rebuilder.row(row)


def _parquet_rows(location: str, filter, storage_options: dict | None, batch_rows: int) -> Iterator[RebuiltRow]:
    """Every row of the dataset rebuilt, in candid order across files (each file is in candid order)."""
    dataset = open_dataset(location, storage_options=storage_options, unify=False)  # each file read as it is
    fragments = sorted(dataset.get_fragments(filter=filter), key=lambda f: f.path)
    streams = [_fragment_rows(f, dataset, filter, batch_rows) for f in fragments]
    yield from heapq.merge(*streams, key=lambda r: r.record["candid"])


def parquet_alerts(
    location: str,
    filter: ds.Expression | None = None,
    *,
    storage_options: dict | None = None,
    counts: ReadCounts | None = None,
    batch_rows: int = 256,
) -> Iterator[ArchivedAlert]:
    """Packets rebuilt from the dataset, byte for byte: each row with its packet's own header and sync marker
    (`codec.rebuild`), whatever its schema version.

    A row that cannot be rebuilt (a damaged value, a file that keeps no writer schema for an unknown version) is
    reported and skipped, like a bad tarball member.
    """
    counts = counts if counts is not None else ReadCounts(str(location))
    for row in _parquet_rows(location, filter, storage_options, batch_rows):
        record = row.record
        name = f"{record.get('candid')}.avro"
        try:
            packet = row.packet()
            info = codec.peek(packet)
        except (codec.AlertPacketError, KeyError) as e:
            counts.add_bad(name, f"cannot rebuild the packet: {e}")
            continue
        counts.good += 1
        counts.bytes += len(packet)
        yield ArchivedAlert(name, packet, info)


# ------------------------------------------------------------------------------------------------- together


def merge_by_candid(streams: Iterable[Iterable[ArchivedAlert]]) -> Iterator[ArchivedAlert]:
    """Several candid-ordered streams (a night's programme tarballs) as one, in candid (= exposure time) order."""
    return heapq.merge(*streams, key=lambda a: a.info.candid)


def alerts_from(
    location: str,
    *,
    storage_options: dict | None = None,
    counts: ReadCounts | None = None,
    filter: ds.Expression | None = None,
) -> Iterator[ArchivedAlert]:
    """The alerts of a tarball, or rebuilt from a Parquet file or dataset; the kind is read from ``location``."""
    if is_tarball(location):
        if filter is not None:
            raise ValueError(f"a row filter applies to Parquet, not to the tarball {location}")
        return tarball_alerts(location, storage_options=storage_options, counts=counts)
    return parquet_alerts(location, filter, storage_options=storage_options, counts=counts)


def open_sources(
    specs: Iterable[str],
    *,
    archived_night: dt.date | None = None,
    storage_options: dict | None = None,
    prefer: str = "tarball",
    require_checksum: bool = False,
) -> tuple[Iterator[ArchivedAlert], list[ReadCounts], list[str]]:
    """One candid-ordered stream of alerts from several sources, and each source's counts and name.

    A file with a published checksum (an ``MD5SUMS`` line beside a tarball, the manifest of an archive root) is
    read once into a private spool while it is verified, and its packets come from that spool
    (`alertdist.access.verified`); with ``require_checksum`` a source without one is refused before anything is
    read.

    A spec is a tarball, a ``.parquet`` file, or a folder/URL: with ``archived_night`` an archive root whose
    tarballs of that night are used (byte-identical; ``prefer="parquet"`` takes its Parquet files instead, if it
    has them) or a Parquet dataset folder filtered to that night; without it a Parquet dataset read whole.
    Any of them local, ``s3://`` or ``http(s)://`` (over HTTP a dataset folder cannot be listed: give an archive
    root, whose manifest names the files).
    """
    from alertdist.access.verified import Spool

    opened = _Opened(Spool(), storage_options, not require_checksum)
    for spec in map(str, specs):
        if is_tarball(spec) or spec.endswith(".parquet") or archived_night is None:
            opened.file(spec)
        else:
            opened.night_at(spec, archived_night, prefer)
    if not opened.streams:
        raise ValueError("nothing to replay: give at least one tarball, Parquet file or archive location")
    streams = opened.streams
    return (
        opened.spool.holding(streams[0] if len(streams) == 1 else merge_by_candid(streams)),
        opened.counts,
        opened.names,
    )


class _Opened:
    """The streams `open_sources` has opened so far, each with its counts and name, and the spool they read from."""

    def __init__(self, spool, storage_options: dict | None, allow_unverified: bool) -> None:
        self.spool, self.storage_options, self.allow_unverified = spool, storage_options, allow_unverified
        self.streams: list[Iterator[ArchivedAlert]] = []
        self.counts: list[ReadCounts] = []
        self.names: list[str] = []

    def add(self, stream: Iterator[ArchivedAlert], counts: ReadCounts) -> None:
        self.streams.append(stream)
        self.counts.append(counts)
        self.names.append(counts.source)

    def file(self, spec: str) -> None:
        """A tarball (verified by the ``MD5SUMS`` beside it, if there is one), a Parquet file, or a dataset whole."""
        from alertdist.access.listing import open_location
        from alertdist.access.verified import refuse_unverified

        read_from, md5 = spec, None
        if is_tarball(spec):
            folder, _, name = spec.rstrip("/").rpartition("/")
            beside = open_location(folder or ".", self.storage_options)
            md5 = beside.md5sums().get(name)
        if md5:
            read_from = str(self.spool.named(beside, name, md5))
        else:
            refuse_unverified(spec, self.allow_unverified)
        c = ReadCounts(spec)
        self.add(alerts_from(read_from, storage_options=self.storage_options, counts=c), c)

    def night_at(self, spec: str, night: dt.date, prefer: str) -> None:
        """The night's files of an archive root, or the night's rows of a Parquet dataset folder."""
        from alertdist.access.listing import ArchiveAccessError, open_location
        from alertdist.access.verified import refuse_unverified
        from alertdist.nights.dates import format_night

        location = open_location(spec, self.storage_options)
        files_night, night = night, format_night(night)  # the listing takes the date; names and columns its label
        nights = [n.label for n in location.nights()]
        if not nights:  # not an archive root: a Parquet dataset folder, filtered to the night
            refuse_unverified(spec, self.allow_unverified)
            dataset = open_dataset(spec, storage_options=self.storage_options, unify=False)
            if not any(True for _ in dataset.get_fragments(ds.field("night") == night)):
                raise ArchiveAccessError(f"{spec} is neither an archive root nor a Parquet dataset with night {night}")
            c = ReadCounts(f"{spec} (Parquet, night {night})")
            self.add(
                parquet_alerts(spec, ds.field("night") == night, storage_options=self.storage_options, counts=c), c
            )
            return
        if night not in nights:
            raise ArchiveAccessError(
                f"{spec} has no night {night}; it has {', '.join(nights[-5:])}"
                + (f" and {len(nights) - 5} earlier" if len(nights) > 5 else "")
            )
        files = location.night_files(files_night)
        wanted = [f for f in files if f.kind == prefer] or [f for f in files if f.kind == "tarball"]
        if not wanted:
            raise ArchiveAccessError(f"{spec} lists no file of night {night}")
        for f in wanted:
            if not (f.md5 or f.sha256):
                refuse_unverified(location.display(f.path), self.allow_unverified)
        for f in wanted:  # file by file (known from the manifest): works where folders cannot be listed (HTTP)
            c = ReadCounts(location.display(f.path))
            read = tarball_alerts if f.kind == "tarball" else parquet_alerts
            self.add(read(str(self.spool.archived(location, f)), counts=c), c)  # verified, read once


def packets_for_batch(
    specs: Iterable[str],
    *,
    archived_night: dt.date | None = None,
    storage_options: dict | None = None,
    prefer: str = "tarball",
) -> tuple[Iterator[tuple[str, bytes]], list[ReadCounts]]:
    """``(name, packet)`` pairs, the input `alertdist.filters.batch.run_batch` takes, from any archived source
    (see `open_sources`), and the sources' counts of good and bad members."""
    alerts, counts, _ = open_sources(
        specs, archived_night=archived_night, storage_options=storage_options, prefer=prefer
    )
    return ((a.name, a.packet) for a in alerts), counts
