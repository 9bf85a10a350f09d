"""Read back a night's archive and prove it whole: files, checksums, counts, candids and Kafka offsets agree.

Run after writing (and any time later, e.g. after copying the archive elsewhere). Each file is read once, as a
stream, so this needs no more memory than the archiver; the candids of the tarball and of the Parquet file are
compared through a running hash of their sequence rather than held in lists.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow.parquet as pq

from tasks.archive.manifest import NightManifest, ProgrammeArchive, manifest_path
from tasks.archive.storage import Destination
from tasks.archive.tarball import MEMBER_MODE, parse_md5sums, read_members
from tasks.night_state import NightState

__all__ = ["ArchiveVerificationError", "verify_night", "verify_programme", "read_manifest"]


class ArchiveVerificationError(RuntimeError):
    """What was written does not match what was read: the message lists every problem found."""

    def __init__(self, night: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"archive of night {night} failed verification ({len(problems)} problem(s)): "
                         + "; ".join(problems) + ". Re-run the archive for this night.")


class _HashingReader(io.RawIOBase):
    def __init__(self, raw) -> None:
        super().__init__()
        self.raw, self.size = raw, 0
        self.sha256, self.md5 = hashlib.sha256(), hashlib.md5()

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(8 * 1024 * 1024):
            pass


def read_manifest(dest_url: str, survey: str, night: str, storage_options: dict | None = None) -> NightManifest:
    return NightManifest.from_json(Destination(dest_url, storage_options).read_bytes(manifest_path(survey, night)))


def _check_digest(label: str, expected: dict, size: int, sha256: str, md5: str, problems: list[str]) -> None:
    if (size, sha256, md5) != (expected["size"], expected["sha256"], expected["md5"]):
        problems.append(f"{label}: {size} bytes sha256 {sha256[:12]}... md5 {md5[:12]}..., but the manifest says "
                        f"{expected['size']} bytes sha256 {expected['sha256'][:12]}... md5 {expected['md5'][:12]}...")


def verify_programme(dest: Destination, archive: ProgrammeArchive, state: NightState | None = None) -> list[str]:
    """Problems found for one programme (an empty list when all is well)."""
    problems: list[str] = []
    written = archive.counts["written"]
    counts = archive.counts
    if counts["read"] != counts["written"] + counts["duplicates"] + counts["rejected"]:
        problems.append(f"{archive.topic}: read {counts['read']} != written + duplicates + rejected ({counts})")
    for partition, entry in sorted(archive.partitions.items()):
        where = f"{archive.topic} partition {partition}"
        if entry["read"] != entry["end_offset"] - entry["first_offset"]:
            problems.append(f"{where}: read {entry['read']} messages, but offsets {entry['first_offset']}.."
                            f"{entry['end_offset']} hold {entry['end_offset'] - entry['first_offset']}")
        if entry["first_offset"] != 0:
            problems.append(f"{where}: offsets 0..{entry['first_offset'] - 1} were no longer in Kafka when read")
        if state is not None and state.end_offsets.get(archive.topic, {}).get(partition) != entry["end_offset"]:
            problems.append(f"{where}: read up to {entry['end_offset']}, but the night closed at "
                            f"{state.end_offsets.get(archive.topic, {}).get(partition)}")
    if state is not None and set(state.end_offsets.get(archive.topic, {})) != set(archive.partitions):
        problems.append(f"{archive.topic}: partitions read {sorted(archive.partitions)} differ from the closing "
                        f"record's {sorted(state.end_offsets.get(archive.topic, {}))}")

    tar_file, pq_file = archive.files["tarball"], archive.files["parquet"]
    tar_candids, members, previous = hashlib.sha256(), 0, -1
    if not dest.exists(tar_file["path"]):
        problems.append(f"{dest.display(tar_file['path'])} is missing")
    else:
        with dest.open_read(tar_file["path"]) as raw:
            reader = _HashingReader(raw)
            for member in read_members(reader, with_data=False):
                members += 1
                stem, _, suffix = member.name.partition(".")
                if suffix != "avro" or not stem.isdigit() or int(stem) <= previous or member.mode != MEMBER_MODE:
                    problems.append(f"{tar_file['path']}: member {member.name!r} (mode {member.mode:o}) out of order"
                                    " or not named <candid>.avro with mode 744")
                    break
                previous = int(stem)
                tar_candids.update(np.int64(previous).tobytes())
            reader.drain()
        _check_digest(tar_file["path"], tar_file, reader.size, reader.sha256.hexdigest(), reader.md5.hexdigest(),
                      problems)
        if members != written:
            problems.append(f"{tar_file['path']}: {members} members, but {written} alerts were written")

    if not dest.exists(pq_file["path"]):
        problems.append(f"{dest.display(pq_file['path'])} is missing")
        return problems
    digest = dest.digest(pq_file["path"])
    _check_digest(pq_file["path"], pq_file, digest.size, digest.sha256, digest.md5, problems)
    pq_candids, rows = hashlib.sha256(), 0
    with dest.open_read(pq_file["path"]) as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            candids = parquet.read_row_group(group, columns=["candid"]).column("candid").to_numpy()
            pq_candids.update(candids.astype("<i8").tobytes())
            rows += len(candids)
    if rows != written:
        problems.append(f"{pq_file['path']}: {rows} rows, but {written} alerts were written")
    if pq_candids.digest() != tar_candids.digest() and members == written == rows:
        problems.append(f"{pq_file['path']} and {tar_file['path']} hold different candids")
    return problems


def verify_night(dest_url: str, manifest: NightManifest, state: NightState | None = None,
                 storage_options: dict | None = None) -> None:
    """Raise ArchiveVerificationError naming every missing or mismatching piece; return quietly otherwise."""
    dest = Destination(dest_url, storage_options)
    problems: list[str] = []
    for archive in manifest.programmes.values():
        problems += verify_programme(dest, archive, state)
    if dest.exists("MD5SUMS"):
        md5sums = parse_md5sums(dest.read_bytes("MD5SUMS").decode())
    else:
        md5sums = {}
        problems.append("MD5SUMS is missing")
    for archive in manifest.programmes.values():
        tar_file = archive.files["tarball"]
        if md5sums and md5sums.get(tar_file["path"]) != tar_file["md5"]:
            problems.append(f"MD5SUMS has {md5sums.get(tar_file['path'])} for {tar_file['path']}, "
                            f"the manifest {tar_file['md5']}")
    if problems:
        raise ArchiveVerificationError(manifest.night, problems)
