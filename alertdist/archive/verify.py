"""Read back a night's archive and prove it whole: files, checksums, counts, candids and Kafka offsets agree.

Run after writing (and any time later, e.g. after copying the archive elsewhere). Each file is read once, as a
stream, so this needs no more memory than the archiver; the candids of the tarball and of the Parquet file are
compared through a running hash of their sequence rather than held in lists.

What is recomputed: the size and a checksum of every file, and the tarball is inflated (the gzip CRC-32 and length
checked) and walked header by header. Which checksum: ``sha256`` on any check against a manifest (e.g. after
copying the archive elsewhere); ``crc32`` for the read-back right after writing, by the archiver itself: the
manifest's CRC-32 and sha256 were computed from the same bytes as they were written, so a matching CRC-32 proves
the stored bytes are those whose sha256 the manifest records, at a tenth of the cost. md5 is never recomputed
(equal bytes have equal md5). The tarball and Parquet checks of every programme run on two threads: inflating,
hashing and Parquet reads release the GIL.
"""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from alertdist.archive.manifest import NightManifest, ProgrammeArchive, manifest_path
from alertdist.archive.storage import Destination
from alertdist.archive.tarball import MD5SUMS, MEMBER_MODE, parse_md5sums
from alertdist.nights.state import NightState

try:
    from isal import isal_zlib
except ImportError as e:  # pragma: no cover - a packaging error, said plainly
    raise ImportError("the archive verification needs python-isal: pip install isal") from e

__all__ = ["CHECKSUMS", "ArchiveVerificationError", "read_manifest", "verify_night", "verify_programme"]

# Read in small pieces: each inflates to a few hundred KB that stay in the CPU's caches, 2x faster than 4-16 MB
# pieces (which also fault in fresh pages every time). The limit keeps memory bounded whatever the ratio.
_READ_BLOCK = 128 * 1024
_INFLATE_LIMIT = 4 * 1024 * 1024
_BLOCK = 512


class ArchiveVerificationError(RuntimeError):
    """What was written does not match what was read: the message lists every problem found."""

    def __init__(self, night: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"archive of night {night} failed verification ({len(problems)} problem(s)): "
            + "; ".join(problems)
            + ". Re-run the archive for this night."
        )


def read_manifest(dest_url: str, survey: str, night: str, storage_options: dict | None = None) -> NightManifest:
    return NightManifest.from_json(Destination(dest_url, storage_options).read_bytes(manifest_path(survey, night)))


CHECKSUMS = ("sha256", "crc32")


class _ReadBack:
    """Size and checksum of a file as it is read back, to compare with its manifest entry (see the module doc)."""

    def __init__(self, path: str, expected: dict, checksum: str) -> None:
        if checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be one of {CHECKSUMS}, not {checksum!r}")
        self.path, self.expected, self.size = path, expected, 0
        self.checksum = checksum if expected.get(checksum) else "sha256"  # manifests before crc32 have sha256
        self._sha256 = hashlib.sha256() if self.checksum == "sha256" else None
        self._crc32 = 0

    def update(self, block: bytes) -> None:
        self.size += len(block)
        if self._sha256 is not None:
            self._sha256.update(block)
        else:
            self._crc32 = isal_zlib.crc32(block, self._crc32)

    def problems(self) -> list[str]:
        found = self._sha256.hexdigest() if self._sha256 is not None else f"{self._crc32 & 0xFFFFFFFF:08x}"
        wanted, name = self.expected[self.checksum], self.checksum
        if (self.size, found) == (self.expected["size"], wanted):
            return []
        return [
            f"{self.path}: {self.size} bytes {name} {found[:12]}..., but the manifest says "
            f"{self.expected['size']} bytes {name} {wanted[:12]}..."
        ]


class _TarWalk:
    """Follows a tar stream fed in pieces: counts members, checks names, order, modes and header checksums."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer = b""
        self.skip = 0  # bytes of member data and padding still to pass over
        self.members = 0
        self.previous = -1
        self.ended = False  # the two zero blocks were seen
        self.candids = hashlib.sha256()
        self.problem: str | None = None

    def feed(self, data: bytes) -> None:
        """Take the next piece of the stream: member data is passed over in place, only headers are copied."""
        view = memoryview(data)
        while view and not self.problem:
            if self.skip:
                step = min(self.skip, len(view))
                self.skip -= step
                view = view[step:]
                continue
            need = _BLOCK - len(self.buffer)
            if len(view) < need:  # a header cut between two pieces: kept until the rest comes
                self.buffer += bytes(view)
                return
            header, self.buffer = self.buffer + bytes(view[:need]), b""
            view = view[need:]
            self._block(header)

    def _block(self, header: bytes) -> None:
        """One 512-byte block where a header is due: a member's header, or the zero blocks that end the archive."""
        if header.count(0) == _BLOCK:
            self.ended = True
        elif self.ended:
            self.problem = f"{self.path}: data after the end-of-archive blocks"
        else:
            self._member(header)
            if not self.problem:
                size = int(header[124:135], 8)
                self.skip = size + -size % _BLOCK

    def _member(self, header: bytes) -> None:
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        stem, _, suffix = name.partition(".")
        try:
            mode, size = int(header[100:107], 8), int(header[124:135], 8)
            checksum = int(header[148:154], 8)
        except ValueError:
            self.problem = f"{self.path}: member after {self.members} members has an unreadable header"
            return
        if checksum != sum(header) - sum(header[148:156]) + 256 or header[156:157] not in (b"0", b"\0") or size < 0:
            self.problem = f"{self.path}: member {name!r} has a corrupt header (checksum or type)"
        elif suffix != "avro" or not stem.isdigit() or int(stem) <= self.previous or mode != MEMBER_MODE:
            self.problem = (
                f"{self.path}: member {name!r} (mode {mode:o}) out of order or not named <candid>.avro with mode 744"
            )
        else:
            self.previous = int(stem)
            self.members += 1
            self.candids.update(struct.pack("<q", self.previous))

    def finish(self) -> str | None:
        if self.problem:
            return self.problem
        if not self.ended or self.skip or self.buffer.count(0) != len(self.buffer):
            return f"{self.path}: the tar stream is cut short (no end-of-archive blocks)"
        return None


def _read_file(dest: Destination, entry: dict, checksum: str, each_block=None) -> list[str] | None:
    """Read a file of the archive once, block by block (each also handed to ``each_block``): the problems with
    its size and checksum against its manifest ``entry``, or None if it is missing."""
    if not dest.exists(entry["path"]):
        return None
    read_back = _ReadBack(entry["path"], entry, checksum)
    with dest.open_read(entry["path"]) as raw:
        while block := raw.read(_READ_BLOCK):
            read_back.update(block)
            if each_block is not None:
                each_block(block)
    return read_back.problems()


class _GzipTar:
    """A .tar.gz fed block by block: inflated (gzip CRC-32 and length checked) and walked as it comes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inflate = isal_zlib.decompressobj(16 + 15)  # the gzip wrapper: header, CRC-32 and length are checked
        self.walk = _TarWalk(path)
        self.problem: str | None = None

    def feed(self, block: bytes) -> None:
        if self.problem:
            return
        try:
            if self.inflate.eof:
                raise ValueError("data after the end of the gzip stream")
            self.walk.feed(self.inflate.decompress(block, _INFLATE_LIMIT))
            while self.inflate.unconsumed_tail and not self.walk.problem:
                self.walk.feed(self.inflate.decompress(self.inflate.unconsumed_tail, _INFLATE_LIMIT))
        except (isal_zlib.error, ValueError) as e:
            self.problem = f"{self.path}: not a valid gzip stream ({e})"

    def finish(self) -> str | None:
        if self.problem or not self.inflate.eof:
            return self.problem or f"{self.path}: the gzip stream is cut short"
        if self.inflate.unused_data:
            return f"{self.path}: {len(self.inflate.unused_data)} bytes after the end of the gzip stream"
        return self.walk.finish()


def _check_tarball(dest: Destination, archive: ProgrammeArchive, checksum: str) -> tuple[list[str], bytes, int]:
    """Problems, the hash of the candid sequence and the member count of one programme's tarball."""
    tar_file = archive.files["tarball"]
    stream = _GzipTar(tar_file["path"])
    problems = _read_file(dest, tar_file, checksum, stream.feed)
    if problems is None:
        return [f"{dest.display(tar_file['path'])} is missing"], b"", -1
    if problem := stream.finish():
        return [*problems, problem], b"", -1
    if stream.walk.members != archive.counts["written"]:
        problems.append(
            f"{tar_file['path']}: {stream.walk.members} members, but {archive.counts['written']} alerts were written"
        )
    return problems, stream.walk.candids.digest(), stream.walk.members


def _check_parquet(dest: Destination, archive: ProgrammeArchive, checksum: str) -> tuple[list[str], bytes, int]:
    """Problems, the hash of the candid sequence and the row count of one programme's Parquet file."""
    pq_file = archive.files["parquet"]
    path = pq_file["path"]
    problems = _read_file(dest, pq_file, checksum)
    if problems is None:
        return [f"{dest.display(path)} is missing"], b"", -1
    candids, rows = hashlib.sha256(), 0
    with dest.open_read(path) as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            column = parquet.read_row_group(group, columns=["candid"]).column("candid").to_numpy()
            candids.update(column.astype("<i8").tobytes())
            rows += len(column)
    if rows != archive.counts["written"]:
        problems.append(f"{path}: {rows} rows, but {archive.counts['written']} alerts were written")
    return problems, candids.digest(), rows


def _check_accounts(archive: ProgrammeArchive, state: NightState | None) -> list[str]:
    """The manifest's own sums, and its offsets against the night's closing record."""
    problems: list[str] = []
    counts = archive.counts
    if counts["read"] != counts["written"] + counts["duplicates"] + counts["rejected"]:
        problems.append(f"{archive.topic}: read {counts['read']} != written + duplicates + rejected ({counts})")
    for partition, entry in sorted(archive.partitions.items()):
        where = f"{archive.topic} partition {partition}"
        held = (
            state.messages_in(archive.topic, partition, entry["first_offset"])
            if state is not None
            else entry["end_offset"] - entry["first_offset"]
        )
        if entry["read"] != held:
            problems.append(
                f"{where}: read {entry['read']} messages, but offsets {entry['first_offset']}.."
                f"{entry['end_offset']} hold {held}"
            )
        if entry["first_offset"] != 0:
            problems.append(f"{where}: offsets 0..{entry['first_offset'] - 1} were no longer in Kafka when read")
        if state is not None and state.end_offsets.get(archive.topic, {}).get(partition) != entry["end_offset"]:
            problems.append(
                f"{where}: read up to {entry['end_offset']}, but the night closed at "
                f"{state.end_offsets.get(archive.topic, {}).get(partition)}"
            )
    if state is not None and set(state.end_offsets.get(archive.topic, {})) != set(archive.partitions):
        problems.append(
            f"{archive.topic}: partitions read {sorted(archive.partitions)} differ from the closing "
            f"record's {sorted(state.end_offsets.get(archive.topic, {}))}"
        )
    return problems


def _check_set_aside(dest: Destination, archive: ProgrammeArchive, checksum: str) -> list[str]:
    """The file of set-aside messages (manifests that have one): there, its checksum, a member for each."""
    entry = archive.set_aside
    if entry is None:
        return []
    problems = _read_file(dest, entry, checksum)
    if problems is None:
        return [f"{dest.display(entry['path'])} (the messages set aside) is missing"]
    expected = archive.counts["rejected"] + archive.counts.get("conflicting_duplicates", 0)
    if entry["members"] != expected:
        problems.append(
            f"{entry['path']}: {entry['members']} messages set aside, but {expected} were rejected or conflicting"
        )
    return problems


def verify_programme(
    dest: Destination, archive: ProgrammeArchive, state: NightState | None = None, *, checksum: str = "sha256"
) -> list[str]:
    """Problems found for one programme (an empty list when all is well); ``checksum``: see the module doc."""
    with ThreadPoolExecutor(2, thread_name_prefix="verify") as pool:
        tarball = pool.submit(_check_tarball, dest, archive, checksum)
        parquet = pool.submit(_check_parquet, dest, archive, checksum)
        (tar_problems, tar_candids, members), (pq_problems, pq_candids, rows) = tarball.result(), parquet.result()
    problems = _check_accounts(archive, state) + tar_problems + pq_problems + _check_set_aside(dest, archive, checksum)
    if members == rows == archive.counts["written"] and tar_candids != pq_candids:
        problems.append(
            f"{archive.files['parquet']['path']} and {archive.files['tarball']['path']} hold different candids"
        )
    return problems


def verify_night(
    dest_url: str,
    manifest: NightManifest,
    state: NightState | None = None,
    storage_options: dict | None = None,
    *,
    checked: dict[int, list[str]] | None = None,
    checksum: str = "sha256",
) -> None:
    """Raise ArchiveVerificationError naming every missing or mismatching piece; return quietly otherwise.

    ``checked``: `verify_programme` results already in hand for some programmes (the archiver checks each one
    while it reads the next); those files are not read again. ``checksum``: see the module doc.
    """
    dest = Destination(dest_url, storage_options)
    checked = checked or {}
    problems: list[str] = []
    archives = list(manifest.programmes.values())
    for archive in archives:
        problems += (
            checked[archive.programid]
            if archive.programid in checked
            else verify_programme(dest, archive, state, checksum=checksum)
        )
    if dest.exists(MD5SUMS):
        md5sums = parse_md5sums(dest.read_bytes(MD5SUMS).decode())
    else:
        md5sums = {}
        problems.append("MD5SUMS is missing")
    for archive in archives:
        tar_file = archive.files["tarball"]
        if md5sums and md5sums.get(tar_file["path"]) != tar_file["md5"]:
            problems.append(
                f"MD5SUMS has {md5sums.get(tar_file['path'])} for {tar_file['path']}, the manifest {tar_file['md5']}"
            )
    if problems:
        raise ArchiveVerificationError(manifest.night, problems)
