"""A night's index: find one alert, an object's alerts, or the alerts of a patch of sky and time, without a scan.

One small Parquet file per programme and night, ``index/night=<YYYYMMDD>/programid=<N>/index.parquet``, written by
the archiver in the same pass as the tarball (atomically, its checksum in the manifest's ``index`` entry), sorted
by candid. Per alert: where the packet sits in the tarball, and what a search or a light curve needs (objectId,
jd, ra, dec, a HEALPix cell, fid, magpsf, sigmapsf).

Why the tarball can be read at one alert: `TarballWriter` ends each alert packet's pieces with a full flush (the
deflate stream is byte-aligned and refers to nothing before it), so the point where the next member starts is a
place a fresh raw inflater can begin. The index keeps, per member, that restart point's offset in the .tar.gz,
the compressed bytes to read (up to the next restart point), and how many inflated bytes precede the packet
(the previous member's padding and the tar header). One range read of ~50 KB and one small inflate give the
packet, byte for byte as distributed; the tar header read with it is checked against the candid and size.

Nights archived before the index existed get theirs from `backfill_index`: the tarball is read and written
again by the same `TarballWriter` to a hashing sink (the writer is byte-reproducible), and the offsets are kept
only if the rewrite's sha256 equals the manifest's, so a backfilled index is exactly the one the archiver writes.
"""

from __future__ import annotations

import hashlib
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alertdist.archive.manifest import NightManifest, ProgrammeArchive, manifest_path
from alertdist.archive.storage import Destination, FileDigest
from alertdist.archive.tarball import TarballWriter, _packet_layout, member_header, read_members
from alertdist.nights.dates import format_night

__all__ = [
    "HEALPIX_NSIDE",
    "INDEX_SCHEMA",
    "IndexError_",
    "IndexingTarball",
    "NightIndex",
    "backfill_index",
    "build_index",
    "healpix_cells",
    "index_path",
    "read_packet",
    "write_index",
]

HEALPIX_NSIDE = 64  # nested; a cell is ~0.9 degree across: a cone search reads few cells, a night has ~50k
_SCIENCE = ("objectId", "candid", "jd", "ra", "dec", "fid", "magpsf", "sigmapsf")
INDEX_SCHEMA = pa.schema(
    [
        ("candid", pa.int64()),
        ("objectId", pa.string()),
        ("jd", pa.float64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("hpx", pa.int32()),
        ("fid", pa.int8()),
        ("magpsf", pa.float32()),
        ("sigmapsf", pa.float32()),
        ("offset", pa.int64()),  # restart point in the .tar.gz
        ("length", pa.int32()),  # compressed bytes from there to the next restart point
        ("skip", pa.int32()),  # inflated bytes before the packet (padding, tar header)
        ("size", pa.int32()),  # the packet's bytes
    ]
)
_ROW_GROUP = 65_536
_TAR_BLOCK = 512


class IndexError_(RuntimeError):
    """An index could not be built or does not match the archive; the message says what to do."""


def index_path(night, programid: int) -> str:
    """``index/night=YYYYMMDD/programid=N/index.parquet``, relative to the archive root."""
    label = night if isinstance(night, str) else format_night(night)
    return f"index/night={label}/programid={programid}/index.parquet"


def healpix_cells(ra, dec) -> np.ndarray:
    """Nested HEALPix cells (nside `HEALPIX_NSIDE`) of positions in degrees."""
    import astropy.units as u
    from astropy_healpix import HEALPix

    grid = HEALPix(nside=HEALPIX_NSIDE, order="nested")
    ra = np.asarray(ra, dtype=np.float64)
    if ra.size == 0:
        return np.zeros(0, dtype=np.int32)
    return grid.lonlat_to_healpix(ra * u.deg, np.asarray(dec, dtype=np.float64) * u.deg).astype(np.int32)


def cone_cells(ra: float, dec: float, radius_deg: float) -> np.ndarray:
    import astropy.units as u
    from astropy_healpix import HEALPix

    grid = HEALPix(nside=HEALPIX_NSIDE, order="nested")
    return grid.cone_search_lonlat(ra * u.deg, dec * u.deg, radius=radius_deg * u.deg).astype(np.int32)


class _Counting:
    """Counts the bytes written through it to ``raw`` (None: nowhere), hashing them if asked."""

    def __init__(self, raw=None, *, sha256: bool = False) -> None:
        self.raw, self.count = raw, 0
        self.hash = hashlib.sha256() if sha256 else None

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self.count += size
        if self.hash is not None:
            self.hash.update(data)
        if self.raw is not None:
            self.raw.write(data)
        return size


class IndexingTarball(TarballWriter):
    """A `TarballWriter` that notes, for each member, where in the .tar.gz it can be inflated on its own."""

    def __init__(self, fileobj) -> None:
        self._sink = _Counting(fileobj)
        super().__init__(self._sink)
        self.names: list[str] = []
        self._offsets, self._skips, self._sizes = array("q"), array("q"), array("q")
        self._restart = (self._sink.count, 0)  # (compressed offset, inflated offset) of the last restart point
        self._clean = True  # the stream is at a restart point (the last member was an alert packet)

    def add(self, name: str, data: bytes, mtime: int) -> None:
        if self._clean:  # everything compressed so far was flushed: written, or waiting in the output list
            self._restart = (self._sink.count + sum(map(len, self._output)), self._length)
        offset, inflated = self._restart
        header = len(member_header(name, len(data), mtime))
        self._offsets.append(offset)
        self._skips.append(self._length - inflated + len(self._padding) + header)
        self._sizes.append(len(data))
        self.names.append(name)
        super().add(name, data, mtime)
        self._clean = _packet_layout(data) is not None

    def locations(self) -> dict[str, np.ndarray]:
        """Per member, in the order added: offset, length, skip, size (call after `close`)."""
        offsets = np.frombuffer(self._offsets, dtype=np.int64)
        total = self._sink.count
        ends = np.empty_like(offsets)
        # a member's span ends at the first restart point after its own, or at the end of the file
        following = np.append(offsets[1:], total)
        nxt = total
        for i in range(len(offsets) - 1, -1, -1):
            if following[i] != offsets[i]:
                nxt = following[i]
            ends[i] = nxt
        return {
            "offset": offsets,
            "length": (ends - offsets).astype(np.int32),
            "skip": np.frombuffer(self._skips, dtype=np.int64).astype(np.int32),
            "size": np.frombuffer(self._sizes, dtype=np.int64).astype(np.int32),
        }


def build_index(science: pa.Table, names: list[str], locations: dict[str, np.ndarray], where: str) -> pa.Table:
    """The index table from the Parquet file's columns and the tarball's member locations (same candid order)."""
    candids = science.column("candid").to_numpy()
    member_candids = np.array([int(n.removesuffix(".avro")) for n in names], dtype=np.int64)
    if len(candids) != len(member_candids) or not np.array_equal(candids, member_candids):
        raise IndexError_(
            f"{where}: the Parquet file and the tarball hold different candids ({len(candids)} rows, "
            f"{len(member_candids)} members); verify the night (`alertdist archive --night N` again rewrites it)"
        )
    ra, dec = science.column("ra").to_numpy(), science.column("dec").to_numpy()
    columns = {
        "candid": candids,
        "objectId": science.column("objectId"),
        "jd": science.column("jd"),
        "ra": ra,
        "dec": dec,
        "hpx": healpix_cells(ra, dec),
        "fid": _small_int(science.column("fid")),
        "magpsf": pc.cast(science.column("magpsf"), pa.float32(), safe=False),  # 1e300 -> inf, never an error
        "sigmapsf": pc.cast(science.column("sigmapsf"), pa.float32(), safe=False),
        **locations,
    }
    table = pa.table(columns, schema=INDEX_SCHEMA)
    return table.sort_by("candid")


def _small_int(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A band id as int8; a value a hostile packet put out of that range is null in the index, not an error that
    would leave the whole programme without one (the packet itself is archived as it came)."""
    fits = pc.and_(pc.greater_equal(column, -128), pc.less_equal(column, 127))
    return pc.cast(pc.if_else(fits, column, pa.scalar(None, column.type)), pa.int8())


def _science(dest: Destination, parquet: str) -> pa.Table:
    with dest.open_read(parquet) as f:
        return pq.read_table(f, columns=list(_SCIENCE))


def write_index(
    dest: Destination, night, programid: int, parquet: str, names: list[str], locations: dict[str, np.ndarray]
) -> FileDigest:
    """Write a programme's index atomically (its Parquet file is read for the science columns); its digest."""
    table = build_index(_science(dest, parquet), names, locations, parquet)
    path = index_path(night, programid)
    dest.remove_stale_temporaries(path)
    with dest.open_atomic(path, md5=False) as out:
        pq.write_table(
            table,
            out,
            row_group_size=_ROW_GROUP,
            compression="zstd",
            use_dictionary=["objectId", "jd", "hpx", "fid"],  # an exposure shares jd and sky cells
            column_encoding=dict.fromkeys(("candid", "offset", "length", "skip", "size"), "DELTA_BINARY_PACKED"),
        )
    return out.digest(path)


def index_programme(dest: Destination, night, archive: ProgrammeArchive, tarball: IndexingTarball) -> dict:
    """The archiver's hook: write a just-archived programme's index; returns the manifest's ``index`` entry."""
    digest = write_index(
        dest, night, archive.programid, archive.files["parquet"]["path"], tarball.names, tarball.locations()
    )
    return _entry(digest)


def _entry(digest: FileDigest) -> dict:
    return {"path": digest.path, "size": digest.size, "sha256": digest.sha256, "crc32": digest.crc32}


def backfill_index(dest_url: str, survey: str, night: str, storage_options: dict | None = None) -> NightManifest:
    """Index a night archived before indexes existed (or again); the manifest gets each index's checksum."""
    dest = Destination(dest_url, storage_options)
    path = manifest_path(survey, night)
    if not dest.exists(path):
        raise IndexError_(f"no manifest {dest.display(path)}: is night {night} of {survey} archived there?")
    manifest = NightManifest.from_json(dest.read_bytes(path))
    for archive in manifest.programmes.values():
        tar = archive.files["tarball"]
        sink = _Counting(sha256=True)
        writer = IndexingTarball(sink)
        with dest.open_read(tar["path"]) as f:
            for member in read_members(f):
                writer.add(member.name, member.data, member.mtime)
        writer.close()
        if sink.hash.hexdigest() != tar["sha256"] or sink.count != tar["size"]:
            raise IndexError_(
                f"{dest.display(tar['path'])} is not byte for byte what this archiver writes (another writer, or "
                "damaged): its members cannot be located without a scan. Re-archive the night from Kafka, or serve "
                "it as files only"
            )
        archive.index = index_programme(dest, night, archive, writer)
    dest.write_bytes(path, manifest.to_json())
    return manifest


# ------------------------------------------------------------------------------------------------ reading


def read_packet(fetch, tarball: str, row: dict) -> bytes:
    """The packet of one index row; ``fetch(path, start, end)`` returns those bytes of an archive file."""
    raw = fetch(tarball, int(row["offset"]), int(row["offset"]) + int(row["length"]))
    skip, size = int(row["skip"]), int(row["size"])
    try:
        inflated = zlib.decompressobj(-15).decompress(raw, skip + size)
    except zlib.error as e:
        raise IndexError_(f"{tarball} at {row['offset']}: not a restart point ({e}); backfill the night's index") from e
    header = inflated[skip - _TAR_BLOCK : skip]
    name = header[:100].rstrip(b"\0").decode("ascii", "replace")
    packet = inflated[skip : skip + size]
    if (
        name != f"{int(row['candid'])}.avro"
        or len(packet) != size
        or int(header[124:136].strip(b"\0 ") or 0, 8) != size
    ):
        raise IndexError_(
            f"{tarball} at {row['offset']}: found member {name!r}, expected {int(row['candid'])}.avro; the index "
            "does not match the tarball: run `alertdist archive index --night N` again"
        )
    return packet


@dataclass
class NightIndex:
    """One programme's index of one night, in memory (sorted by candid)."""

    night: str
    programid: int
    tarball: str
    table: pa.Table

    def __post_init__(self) -> None:
        self.candids = self.table.column("candid").to_numpy()
        self._where = {k: self.table.column(k).to_numpy() for k in ("offset", "length", "skip", "size")}

    @classmethod
    def load(cls, dest: Destination, night: str, archive: ProgrammeArchive) -> NightIndex:
        entry = archive.index or {"path": index_path(night, archive.programid)}
        with dest.open_read(entry["path"]) as f:
            table = pq.read_table(f)
        return cls(night, archive.programid, archive.files["tarball"]["path"], table)

    def find(self, candid: int) -> dict | None:
        """Where the alert's packet is (candid, offset, length, skip, size), or None."""
        i = int(np.searchsorted(self.candids, candid))
        if i < len(self.candids) and self.candids[i] == candid:
            return {"candid": candid, **{k: int(v[i]) for k, v in self._where.items()}}
        return None

    def of_object(self, object_id: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("objectId"), object_id))

    def in_cone(self, cells: Iterable[int], since: float | None, until: float | None) -> pa.Table:
        mask = pc.is_in(self.table.column("hpx"), pa.array(list(cells), pa.int32()))
        if since is not None:
            mask = pc.and_(mask, pc.greater_equal(self.table.column("jd"), since))
        if until is not None:
            mask = pc.and_(mask, pc.less(self.table.column("jd"), until))
        return self.table.filter(mask)
