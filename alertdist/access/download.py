"""Download a night from an archive location: resumable, checked against the archive's checksums, never half-kept.

Each file goes to ``<name>.part`` beside its final place and is renamed only after its size, md5 (``MD5SUMS``)
and sha256 (the night's manifest) match. An interrupted download leaves the ``.part`` file; the next attempt
(within the run, after a dropped connection, or a later run) hashes what is there and asks only for the rest:
an HTTP Range request, or a seek on S3 and local files. A server that ignores the Range gets the file from the
start again. A file that fails its checks is deleted, never kept under its final name; if it had been resumed
from an old ``.part`` it is fetched once more from scratch first (the old part may be what was wrong).

The folder it fills is itself an archive root (same relative paths, plus the manifest and an ``MD5SUMS`` of
what was downloaded), so `alertdist archive-list`, the readers and `alertdist replay` work on it directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.access.listing import ArchiveAccessError, ArchiveLocation, RemoteFile, open_location
from alertdist.access.names import landing
from alertdist.archive.tarball import MD5SUMS, md5sums_text, parse_md5sums
from alertdist.atomic import sync_folder, write_atomically
from alertdist.nights.dates import format_night
from alertdist.nights.topics import DEFAULT_PROGRAMMES

__all__ = [
    "KINDS",
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadReport",
    "DownloadedFile",
    "download_file",
    "download_night",
]

KINDS = ("tarball", "parquet")
PART_SUFFIX = ".part"
_CHUNK = 1 << 20
_log = logging.getLogger("alertdist.download")

#: progress(path, bytes_done, bytes_total or None), called as each file advances
Progress = Callable[[str, int, int | None], None]


class DownloadError(RuntimeError):
    """A file could not be downloaded after the allowed attempts (its ``.part`` stays for the next run)."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes are not the archive's: nothing was kept under the final name. ``problems`` says what
    differed (size, md5, sha256)."""

    def __init__(self, message: str, problems: list[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class DownloadedFile:
    path: str  # relative to the archive root, and to the download folder
    local: Path
    size: int
    md5: str
    sha256: str
    checked: tuple[str, ...]  # which of size, md5, sha256 were compared with the archive's values
    resumed_from: int = 0  # bytes already in a .part file when this run started on it
    restarts: int = 0  # times the download began again at byte 0 (range ignored, bad old part)
    already_there: bool = False  # the final file existed and matched: nothing was fetched


@dataclass
class DownloadReport:
    night: dt.date
    source: str
    folder: Path
    files: list[DownloadedFile] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return sum(0 if f.already_there else f.size - f.resumed_from for f in self.files)


class _Hashes:
    def __init__(self) -> None:
        self.md5, self.sha256, self.size = hashlib.md5(), hashlib.sha256(), 0

    def update(self, block: bytes) -> None:
        self.md5.update(block)
        self.sha256.update(block)
        self.size += len(block)


def _hash_file(path: Path) -> _Hashes:
    hashes = _Hashes()
    with open(path, "rb") as f:
        while block := f.read(8 * _CHUNK):
            hashes.update(block)
    return hashes


def _problems(remote: RemoteFile, hashes: _Hashes) -> list[str]:
    problems = []
    if remote.size is not None and hashes.size != remote.size:
        problems.append(f"size {hashes.size} instead of {remote.size}")
    if remote.md5 and hashes.md5.hexdigest() != remote.md5:
        problems.append(f"md5 {hashes.md5.hexdigest()} instead of {remote.md5}")
    if remote.sha256 and hashes.sha256.hexdigest() != remote.sha256:
        problems.append(f"sha256 {hashes.sha256.hexdigest()} instead of {remote.sha256}")
    return problems


def _checked(remote: RemoteFile) -> tuple[str, ...]:
    return tuple(n for n, v in (("size", remote.size), ("md5", remote.md5), ("sha256", remote.sha256)) if v is not None)


def _fetch_into(
    location: ArchiveLocation, remote: RemoteFile, part: Path, hashes: _Hashes, progress: Progress | None, attempts: int
) -> int:
    """Append the rest of the file to ``part`` (already hashed into ``hashes``); returns restarts at byte 0."""
    restarts = 0
    for attempt in range(1, attempts + 1):
        if remote.size is not None and hashes.size >= remote.size:
            return restarts
        try:
            start, chunks = location.read_from(remote.path, hashes.size, _CHUNK)
            with open(part, "r+b" if part.exists() else "wb") as out:
                if start == 0 and hashes.size:  # the server sent the whole file, not the rest: begin again
                    _log.info(
                        "%s: the server ignored the range request; downloading from the start",
                        location.display(remote.path),
                    )
                    out.truncate(0)
                    hashes.__init__()
                    restarts += 1
                elif start != hashes.size:
                    raise DownloadError(
                        f"{location.display(remote.path)}: asked for bytes from {hashes.size}, "
                        f"the server sent bytes from {start}; download it without resuming "
                        f"(delete {part})"
                    )
                out.seek(hashes.size)
                try:
                    for block in chunks:
                        out.write(block)
                        hashes.update(block)
                        if progress is not None:
                            progress(remote.path, hashes.size, remote.size)
                        if remote.size is not None and hashes.size > remote.size:
                            break  # longer than the archive says: the checks will refuse it
                finally:
                    out.flush()
                    os.fsync(out.fileno())
            if remote.size is not None and hashes.size < remote.size:
                raise ConnectionError(f"the transfer ended at byte {hashes.size} of {remote.size}")
            return restarts
        except (ConnectionError, TimeoutError, OSError) as e:
            if isinstance(e, (FileNotFoundError, PermissionError)) or attempt == attempts:
                raise DownloadError(
                    f"downloading {location.display(remote.path)} failed after {attempt} attempt(s) at byte "
                    f"{hashes.size}: {e}; {part} is kept: run the same download again to resume"
                ) from e
            _log.warning(
                "%s broke off at byte %d (%s); resuming (attempt %d of %d)",
                location.display(remote.path),
                hashes.size,
                e,
                attempt + 1,
                attempts,
            )
            time.sleep(min(0.5 * attempt, 5.0))
    return restarts


def _downloaded(remote: RemoteFile, final: Path, hashes: _Hashes, **how) -> DownloadedFile:
    checksums = (hashes.md5.hexdigest(), hashes.sha256.hexdigest())
    return DownloadedFile(remote.path, final, hashes.size, *checksums, _checked(remote), **how)


def download_file(
    location: ArchiveLocation, remote: RemoteFile, folder: Path, *, progress: Progress | None = None, attempts: int = 5
) -> DownloadedFile:
    """Download one file of the archive into ``folder`` (same relative path), resumably and verified.

    Raises `ArchiveNameError` (before anything is fetched or written) for a name the archive never writes."""
    final = landing(folder, remote.path)
    part = final.with_name(final.name + PART_SUFFIX)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        hashes = _hash_file(final)
        if not _problems(remote, hashes):
            return _downloaded(remote, final, hashes, already_there=True)
        _log.warning("%s exists but does not match the archive; downloading it again", final)
    restarts = 0
    for fresh in (False, True):
        if fresh:
            part.unlink(missing_ok=True)
        hashes = _hash_file(part) if part.exists() else _Hashes()
        resumed_from = hashes.size
        restarts += _fetch_into(location, remote, part, hashes, progress, attempts)
        problems = _problems(remote, hashes)
        if not problems:
            _rename_durably(part, final)
            return _downloaded(remote, final, hashes, resumed_from=resumed_from, restarts=restarts)
        if resumed_from == 0 or fresh:
            break
        _log.warning(
            "%s resumed from an old %s does not match (%s); downloading it again from the start",
            location.display(remote.path),
            part.name,
            "; ".join(problems),
        )
        restarts += 1
    part.unlink(missing_ok=True)
    raise ChecksumMismatchError(
        f"{location.display(remote.path)} downloaded but does not match the archive: {'; '.join(problems)}. "
        "Nothing was kept. If it happens again the archive copy itself is damaged: tell its operators",
        problems,
    )


def _wanted(
    files: Iterable[RemoteFile], what: Iterable[str], programmes: Iterable[int] | None, programme_names: dict[int, str]
) -> list[RemoteFile]:
    what = set(what)
    unknown = what - set(KINDS)
    if unknown:
        raise ValueError(f"cannot download {sorted(unknown)}: choose from {', '.join(KINDS)}")
    wanted = None
    if programmes:
        wanted = {str(p) for p in programmes} | {programme_names.get(int(p), "") for p in programmes}
    chosen = []
    for f in files:
        if f.kind not in what:
            continue
        if wanted is not None:  # a tarball names its programme, a Parquet file's folder gives the programid
            label = f.path.split("programid=", 1)[1].split("/", 1)[0] if f.kind == "parquet" else f.name.split("_")[1]
            if label not in wanted:
                continue
        chosen.append(f)
    return chosen


def _save_indexes(
    location: ArchiveLocation, folder: Path, night: dt.date, done: list[DownloadedFile], survey: str | None
) -> None:
    """Keep the night's manifest and the md5 of each tarball beside them, so the folder is an archive root."""
    label = format_night(night)
    names = [
        n
        for n in location.listdir("manifests")
        if n.endswith(f"_{label}.json") and (survey is None or n.startswith(f"{survey}_"))
    ]
    if not names:  # no folder listing (an HTTP server without index pages): the tarballs name the survey
        names = sorted({f"{f.path.split('_', 1)[0]}_{label}.json" for f in done if "/" not in f.path})
    for name in names:
        raw = location.read_bytes(f"manifests/{name}")
        if raw is not None:
            write_atomically(landing(folder, f"manifests/{name}", night=night, kind="manifest"), raw, durable=True)
    sums_path = landing(folder, MD5SUMS)
    sums = parse_md5sums(sums_path.read_text()) if sums_path.exists() else {}
    sums.update({f.path: f.md5 for f in done if "/" not in f.path})
    if sums:
        write_atomically(sums_path, md5sums_text(sums).encode(), durable=True)


def _rename_durably(written: Path, final: Path) -> None:
    """Move a resumable download, already synced to disk, into its final name, and sync the folder so the new name
    survives a crash too."""
    os.replace(written, final)
    sync_folder(final.parent)


def download_night(
    night: dt.date,
    from_url: str,
    to_dir: str | os.PathLike,
    what: Iterable[str] = KINDS,
    *,
    programmes: Iterable[int] | None = None,
    programme_names: dict[int, str] | None = None,
    survey: str | None = None,
    storage_options: dict | None = None,
    progress: Progress | None = None,
    require_checksum: bool = True,
    attempts: int = 5,
) -> DownloadReport:
    """Download a night's tarballs and/or Parquet files from ``from_url`` into ``to_dir``, each one verified.

    Parameters
    ----------
    what : iterable of "tarball", "parquet"
    programmes : iterable of int, optional
        Programme ids to limit the download to; ``programme_names`` gives the name in their tarballs' names.
    require_checksum : bool
        Refuse (before fetching anything) a file for which the archive publishes neither md5 nor sha256.

    Raises
    ------
    ArchiveAccessError
        The night is not there, or the archive cannot be listed.
    ChecksumMismatchError
        A file's bytes do not match the archive's checksums (it was not kept).
    DownloadError
        A file could not be fetched in ``attempts`` tries (its ``.part`` is kept to resume).
    """
    started = time.monotonic()
    location = open_location(from_url, storage_options)
    files = _wanted(location.night_files(night, survey), what, programmes, programme_names or DEFAULT_PROGRAMMES)
    if not files:
        raise ArchiveAccessError(
            f"{from_url} has no {'/'.join(what)} file for night {format_night(night)}"
            + (f" and programmes {sorted(programmes)}" if programmes else "")
        )
    unverifiable = [f.path for f in files if not (f.md5 or f.sha256)]
    if unverifiable and require_checksum:
        raise ArchiveAccessError(
            f"{from_url} publishes no checksum (MD5SUMS or manifest) for {', '.join(unverifiable)}; "
            "a corrupt copy could not be told from a good one. Pass require_checksum=False (--allow-unverified) "
            "to download anyway"
        )
    folder = Path(to_dir)
    report = DownloadReport(night, from_url, folder)
    for remote in files:
        report.files.append(download_file(location, remote, folder, progress=progress, attempts=attempts))
    _save_indexes(location, folder, night, report.files, survey)
    report.elapsed_s = time.monotonic() - started
    return report
