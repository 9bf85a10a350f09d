"""Which names an archive may list, and where each one lands: the one check for every name that comes from an
archive (a manifest entry, an ``MD5SUMS`` line, an index page), so an archive can never name a place.

An archive is input like any other: a manifest entry ``"path": "../x"`` (its size and sha256 from the same
manifest) would otherwise be fetched from outside the archive and written outside the download folder, and
``//host/x`` would reach another host. So a listed file is accepted only under a name the archiver itself
writes (`alertdist.archive`: `tarball_name`, `parquet_path`, `manifest_path`, ``MD5SUMS``): each candidate is
split into its parts and rebuilt with the archiver's own function, and must come back unchanged. What is
accepted is one plain relative path, so it cannot leave a folder or a URL; `landing` and `inside_url` still
check where it ends up (a symlink in the destination, a server that redirects).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from alertdist.access.errors import ArchiveAccessError
from alertdist.archive.manifest import manifest_path
from alertdist.archive.parquet import parquet_path
from alertdist.archive.tarball import MD5SUMS, tarball_name
from alertdist.nights.dates import format_night, parse_night

__all__ = [
    "MANIFEST_NAME",
    "NIGHT_FOLDER",
    "TARBALL_NAME",
    "ArchiveName",
    "ArchiveNameError",
    "archive_name",
    "checked",
    "inside_url",
    "landing",
]

# How the archiver's names split into their parts; `archive_name` rebuilds each with the archiver's function
_WORD = r"[A-Za-z0-9]+"
TARBALL_NAME = re.compile(rf"(?P<survey>{_WORD})_(?P<programme>{_WORD})_(?P<night>[0-9]{{8}})\.tar\.gz")
MANIFEST_NAME = re.compile(rf"(?P<survey>{_WORD})_(?P<night>[0-9]{{8}})\.json")
NIGHT_FOLDER = re.compile(r"night=(?P<night>[0-9]{8})")
_PARQUET = re.compile(r"parquet/night=(?P<night>[0-9]{8})/programid=(?P<programid>[0-9]{1,9})/(?P<file>[^/]+)")
_PARQUET_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.parquet")  # part-0.parquet, or other writers' parts


class ArchiveNameError(ArchiveAccessError, ValueError):
    """An archive listed a file under a name the archiver never writes (or of another night): refused."""


@dataclass(frozen=True)
class ArchiveName:
    """An accepted name: the path relative to the archive root, what it is, and its night (None for MD5SUMS)."""

    path: str
    kind: str  # tarball | parquet | manifest | md5sums
    night: dt.date | None


def _parse(path: str) -> ArchiveName | None:
    if path == MD5SUMS:
        return ArchiveName(path, "md5sums", None)
    m = TARBALL_NAME.fullmatch(path) or _PARQUET.fullmatch(path)
    if m is None and path.startswith("manifests/"):
        m = MANIFEST_NAME.fullmatch(path.removeprefix("manifests/"))
    if m is None:
        return None
    try:
        night = parse_night(m["night"])
    except ValueError:  # eight digits that are no date: the archiver never writes them
        return None
    if m.re is TARBALL_NAME:
        if tarball_name(m["survey"], m["programme"], night) == path:
            return ArchiveName(path, "tarball", night)
    elif m.re is MANIFEST_NAME:
        if manifest_path(m["survey"], format_night(night)) == path:
            return ArchiveName(path, "manifest", night)
    elif _PARQUET_FILE.fullmatch(m["file"]):
        folder = parquet_path(night, int(m["programid"])).rsplit("/", 1)[0]
        if f"{folder}/{m['file']}" == path:  # the programid written as the archiver writes it (no 007)
            return ArchiveName(path, "parquet", night)
    return None


def archive_name(path: object, *, night: dt.date | None = None, kind: str | None = None) -> ArchiveName:
    """``path`` if it is a name the archive writes (of ``night`` and of ``kind``, when given), else
    `ArchiveNameError`: the one test of a name an archive lists, before anything is fetched or written for it."""
    name = _parse(path) if isinstance(path, str) else None
    if name is None:
        raise ArchiveNameError(
            f"the archive lists a file named {path!r}, which is not a name an archive writes "
            "(<survey>_<programme>_<YYYYMMDD>.tar.gz, MD5SUMS, manifests/<survey>_<YYYYMMDD>.json, "
            "parquet/night=<YYYYMMDD>/programid=<N>/<file>.parquet): refused, nothing was fetched or written for it. "
            "The archive is damaged or hostile: tell its operators"
        )
    if night is not None and name.night not in (None, night):
        raise ArchiveNameError(
            f"the archive lists {path!r} as a file of night {format_night(night)}, but the name is of night "
            f"{format_night(name.night)}: "
            "refused, nothing was fetched or written for it. The archive is inconsistent: tell its operators"
        )
    if kind is not None and name.kind != kind:
        raise ArchiveNameError(
            f"the archive lists {path!r} as a {kind} file, but the name is a {name.kind}'s: refused, nothing was "
            "fetched or written for it. The archive is inconsistent: tell its operators"
        )
    return name


def checked(path: str, *, user_named: bool = False) -> str:
    """``path`` as it may be read from an archive location: a name the archive writes (`archive_name`), or with
    ``user_named`` a file the user named beside it (one plain file name: it cannot leave the folder either)."""
    if user_named and isinstance(path, str) and path not in ("", ".", "..") and "/" not in path and "\\" not in path:
        return path
    return archive_name(path).path


def landing(folder: str | Path, path: str, *, night: dt.date | None = None, kind: str | None = None) -> Path:
    """Where a file the archive lists lands under ``folder``: an accepted name (`archive_name`) that stays inside
    ``folder`` even through symlinks already there (a ``parquet`` link to elsewhere is refused)."""
    name = archive_name(path, night=night, kind=kind)
    root = Path(folder).resolve()
    target = root / name.path
    if not target.resolve().is_relative_to(root):
        raise ArchiveNameError(
            f"{Path(folder) / name.path} would land at {target.resolve()}, outside {root} (a symlink in the way): "
            "refused; remove the link or download into another folder"
        )
    return Path(folder) / name.path


def inside_url(base: str, url: str) -> bool:
    """Whether ``url`` is under the archive's URL ``base``: the same scheme, host and port, and under its path
    (no ``..`` segment), so neither a listed name nor a redirect can take a download somewhere else."""
    b, u = urlsplit(base), urlsplit(url)
    try:
        if (b.scheme.lower(), b.hostname, b.port) != (u.scheme.lower(), u.hostname, u.port):
            return False
    except ValueError:  # a port that is not a number
        return False
    if b.username != u.username or b.password != u.password:
        return False
    folder = b.path if b.path.endswith("/") else f"{b.path}/"
    return (
        (u.path == b.path or u.path.startswith(folder))
        and ".." not in u.path.split("/")
        and "%2e" not in u.path.lower()
    )
