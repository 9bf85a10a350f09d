"""Reading one packet file without trusting it: no link followed out of its folder, no FIFO opened, nothing
read past the largest packet (its head is kept for the rejection). The folder, drop-folder and tarball sources
and the batch filter all read files this way."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from alertdist.publish.packets import SourceError, SourcePacket

__all__ = ["HEAD_BYTES", "head_size", "is_packet_file", "read_at_most", "read_packet_file", "too_big"]

#: What is kept of something set aside without being read whole (a file too big, a member that is no packet).
HEAD_BYTES = 1024 * 1024


def is_packet_file(name: str) -> bool:
    # writers create ".name.avro.tmp" or "name.avro.tmp" and rename: never read a file still being written
    return name.endswith(".avro") and not name.startswith(".")


def read_at_most(stream, limit: int) -> bytes:
    """Up to ``limit`` bytes of a file object, never more in memory (a member's stream may decompress forever)."""
    parts, left = [], limit
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def too_big(name: str, size: int, max_bytes: int, head: bytes) -> str:
    return f"oversize: {name} is {size} bytes, over the limit of {max_bytes}; only its first {len(head)} kept"


def head_size(max_bytes: int) -> int:
    """How much of something too big is read and kept: never more than the limit it broke."""
    return min(HEAD_BYTES, max_bytes)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_packet_file(path: Path, root: Path, max_bytes: int) -> SourcePacket | None:
    """The packet in the file ``path`` of the folder ``root``, read without trusting the file.

    Never follows a symbolic link out of ``root``, never opens a FIFO, socket or device (it could block or never
    end), never reads more than ``max_bytes`` + 1 bytes (a larger file is set aside as oversize with its head), and
    a file it may not read is set aside, not retried forever. What is refused comes back with its ``problem``;
    None if the file has gone since it was listed.
    """
    name = path.name
    try:
        link = os.lstat(path)
        target, found = path, link
        if stat.S_ISLNK(link.st_mode):
            target = Path(os.path.realpath(path))
            if not _inside(str(target), os.path.realpath(root)):
                problem = f"outside-folder: {name} is a symbolic link leading outside {root}; not followed"
                return SourcePacket(name, b"", link.st_mtime_ns // 1_000_000, path, problem=problem)
            found = os.stat(target)
        if not stat.S_ISREG(found.st_mode):
            problem = f"not-a-packet: {name} is not a regular file (mode {stat.filemode(found.st_mode)})"
            return SourcePacket(name, b"", found.st_mtime_ns // 1_000_000, path, problem=problem)
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None  # removed (or its link broken) since the folder was listed
    except PermissionError as e:
        problem = f"not-a-packet: {name} cannot be read ({e.strerror}); check its owner and mode"
        return SourcePacket(name, b"", None, path, problem=problem)
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a link between the check and the open
            problem = f"outside-folder: {name} became a symbolic link while being read; not followed"
            return SourcePacket(name, b"", None, path, problem=problem)
        raise SourceError(f"reading packet file {path} failed: {e}") from e
    try:
        info = os.fstat(fd)
        mtime_ms = info.st_mtime_ns // 1_000_000
        if not stat.S_ISREG(info.st_mode):
            problem = f"not-a-packet: {name} is not a regular file (mode {stat.filemode(info.st_mode)})"
            return SourcePacket(name, b"", mtime_ms, path, problem=problem)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            if info.st_size > max_bytes:
                head = read_at_most(stream, head_size(max_bytes))
                problem = too_big(name, info.st_size, max_bytes, head)
                return SourcePacket(name, head, mtime_ms, path, problem=problem, original_size=info.st_size)
            data = read_at_most(stream, max_bytes + 1)
        if len(data) > max_bytes:  # it grew since fstat
            head = data[: head_size(max_bytes)]
            problem = too_big(name, len(data), max_bytes, head)
            return SourcePacket(name, head, mtime_ms, path, problem=problem, original_size=len(data))
        return SourcePacket(name, data, mtime_ms, path)
    except OSError as e:
        raise SourceError(f"reading packet file {path} failed: {e}") from e
    finally:
        os.close(fd)
