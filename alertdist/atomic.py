"""Write-then-rename, the one way this project puts a file in place: a reader (a drop-folder watcher, a download
resumed, a user's script) sees the old file or the whole new one, never a part; a failed write leaves nothing.

The scratch file sits beside the target (same filesystem, so the rename is atomic), its name starts with a dot (the
drop folder and listings skip dot-files) and is unique (two writers never share one). ``durable`` also syncs the
data and the folder, so the new name survives a crash (a rename lives in the folder's own data)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["replaced_atomically", "sync_folder", "write_atomically"]


def sync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike, *, durable: bool = False, mode: int = 0o644) -> Iterator[Path]:
    """A scratch path to write in; when the block ends without error it becomes ``path`` (with ``mode``), otherwise
    it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(scratch)
        os.chmod(scratch, mode)
        if durable:
            with open(scratch, "rb") as written:
                os.fsync(written.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)


def write_atomically(path: str | os.PathLike, data: bytes, *, durable: bool = False, mode: int = 0o644) -> None:
    """``path`` holds ``data``, whole, or is left as it was."""
    with replaced_atomically(path, durable=durable, mode=mode) as scratch:
        scratch.write_bytes(data)
