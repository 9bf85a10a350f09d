"""Verified before anything is produced: a replay reads a file's bytes once, into a local spool, checking them
against the archive's checksums as they arrive, and then reads its packets from that spool.

Hashing a remote file and then reading it again is two downloads, and the second may differ (a file being
rewritten, a hostile server); checking while packets are produced is too late, as they are already out. So
what is produced is exactly what was verified. A file whose archive publishes no checksum (no ``MD5SUMS`` line,
no manifest entry) is refused unless the caller allows unverified input (``--allow-unverified``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from alertdist.access.download import ChecksumMismatchError, download_file
from alertdist.access.listing import ArchiveAccessError, ArchiveLocation, RemoteFile
from alertdist.access.readers import ArchiveReadError

__all__ = ["Spool", "UnverifiedSourceError", "refuse_unverified"]

_CHUNK = 1 << 20


class UnverifiedSourceError(ArchiveAccessError):
    """A source has no checksum to verify it by, and unverified input was not allowed."""


def refuse_unverified(what: str, allowed: bool) -> None:
    """Refuse ``what`` (a source with no published checksum) unless unverified input is ``allowed``."""
    if not allowed:
        raise UnverifiedSourceError(
            f"{what} has no checksum to verify it by (no MD5SUMS line beside it, no manifest entry), so a damaged "
            "or altered copy could not be told from a good one: nothing was produced. Replay the archive root "
            "with --archived-night (its manifest has every file's sha256), or pass --allow-unverified"
        )


class Spool:
    """A private scratch folder (0700, removed by `close` or when the stream that holds it is done) for the
    verified local copies a replay reads."""

    def __init__(self, parent: str | os.PathLike | None = None) -> None:
        self._dir: tempfile.TemporaryDirectory | None = None
        self._parent = parent
        self._count = 0

    @property
    def folder(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="alertdist-spool-", dir=self._parent)
        return Path(self._dir.name)

    def archived(self, location: ArchiveLocation, remote: RemoteFile) -> Path:
        """A file the archive lists, fetched once into the spool and checked against its size and checksums
        while it is written (`download_file`: names checked, resumed after a dropped connection)."""
        self._count += 1
        try:
            return download_file(location, remote, self.folder / str(self._count)).local
        except ChecksumMismatchError as e:
            raise ArchiveReadError(
                f"{location.display(remote.path)} is damaged ({'; '.join(e.problems)}): nothing was produced from it; "
                "download it again (alertdist download verifies checksums), and if it happens again tell the "
                "archive's operators"
            ) from e

    def named(self, beside: ArchiveLocation, name: str, md5: str) -> Path:
        """A file the user named in the folder ``beside`` (its md5 from the ``MD5SUMS`` there), read once into the
        spool while hashed (through the location: over HTTP no redirect leaves the folder's URL)."""
        self._count += 1
        local = self.folder / str(self._count) / name
        local.parent.mkdir()
        digest = hashlib.md5()
        spec = beside.display(name)
        try:
            _, chunks = beside.read_from(name, 0, _CHUNK, user_named=True)
            with open(local, "wb") as out:
                for block in chunks:
                    digest.update(block)
                    out.write(block)
        except (OSError, ConnectionError) as e:
            raise ArchiveAccessError(f"reading {spec} failed: {e}; nothing was produced") from e
        if digest.hexdigest() != md5:
            local.unlink()
            raise ArchiveReadError(
                f"{spec} is damaged (md5 {digest.hexdigest()} instead of {md5}, its MD5SUMS): nothing was produced "
                "from it; download it again (alertdist download verifies checksums)"
            )
        return local

    def holding(self, stream: Iterable) -> Iterator:
        """``stream``, with the spool removed once it is done (or closed, or dropped)."""
        try:
            yield from stream
        finally:
            self.close()

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
