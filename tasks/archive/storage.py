"""Where the archive lands: an fsspec URL (a local folder, or ``s3://bucket/prefix`` on any S3-compatible store).

Every write is atomic, so a crash never leaves a partial file under a final name and a re-run simply replaces
a night's files: locally a file is written under a temporary name in the same folder (``.tmp-<uuid>-<name>``)
and moved into place with ``os.replace``; on S3 the object is uploaded under its final key, which S3 makes
visible only when the single PUT or the multipart upload completes (a failed upload is aborted).
Files are hashed (sha256 and md5) while they are written, so nobody reads them back just to checksum them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

__all__ = ["Destination", "FileDigest", "HashingWriter", "StorageError", "TEMP_PREFIX"]

TEMP_PREFIX = ".tmp-"
_READ_BLOCK = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """A file of the archive could not be written, moved or read."""


@dataclass(frozen=True)
class FileDigest:
    """Size and checksums of one written file (``path`` relative to the destination root)."""

    path: str
    size: int
    sha256: str
    md5: str


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it to ``raw``."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()

    def write(self, data) -> int:
        self._sha256.update(data)
        self._md5.update(data)
        self.raw.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def digest(self, path: str) -> FileDigest:
        return FileDigest(path, self.size, self._sha256.hexdigest(), self._md5.hexdigest())

    # pyarrow's ParquetWriter checks these on a Python file object
    closed = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class Destination:
    """The archive root: ``url`` is a local path or any fsspec URL; ``storage_options`` go to the filesystem.

    For S3-compatible stores, e.g. ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...,
    "region_name": ...}}`` (s3fs options).
    """

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = str(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise StorageError(f"cannot open archive destination {self.url!r}: {e}") from e
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)

    def full_path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def display(self, path: str) -> str:
        """The file's URL as a user would type it."""
        return self.full_path(path) if self.local else f"{_protocols(self.fs)[0]}://{self.full_path(path)}"

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[HashingWriter]:
        """Yield a writer for ``path``; the file appears under its final name only if the block succeeds."""
        final = self.full_path(path)
        folder, _, name = final.rpartition("/")
        try:
            if folder:
                self.fs.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create folder {folder!r} for {self.display(path)}: {e}") from e
        if self.local:
            temp = f"{folder}/{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
            with _wrapped(f"writing {temp}"):
                raw = open(temp, "wb", buffering=1024 * 1024)
            try:
                writer = HashingWriter(raw)
                yield writer
                with _wrapped(f"finishing {temp}"):
                    raw.flush()
                    os.fsync(raw.fileno())
                    raw.close()
                    os.replace(temp, final)
            except BaseException:
                raw.close()
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        else:
            with _wrapped(f"opening {self.display(path)} for writing"):
                raw = self.fs.open(final, "wb", block_size=64 * 1024 * 1024)
            try:
                writer = HashingWriter(raw)
                yield writer
                with _wrapped(f"uploading {self.display(path)}"):
                    raw.close()  # completes the upload: only now does the object exist
            except BaseException:
                with contextlib.suppress(Exception):
                    if hasattr(raw, "discard"):
                        raw.discard()  # aborts a multipart upload; nothing appears under the key
                        raw.closed = True  # or the file's finaliser would try to upload what is left
                raise

    def write_bytes(self, path: str, data: bytes) -> FileDigest:
        with self.open_atomic(path) as out:
            out.write(data)
        return out.digest(path)

    def read_bytes(self, path: str) -> bytes:
        with _wrapped(f"reading {self.display(path)}"):
            return self.fs.cat_file(self.full_path(path))

    def open_read(self, path: str):
        with _wrapped(f"opening {self.display(path)}"):
            return self.fs.open(self.full_path(path), "rb", block_size=_READ_BLOCK)

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(self.full_path(path))

    def digest(self, path: str) -> FileDigest:
        """Size and checksums of a stored file, by reading it back."""
        sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
        with self.open_read(path) as f, _wrapped(f"reading {self.display(path)}"):
            while block := f.read(_READ_BLOCK):
                sha256.update(block)
                md5.update(block)
                size += len(block)
        return FileDigest(path, size, sha256.hexdigest(), md5.hexdigest())

    def listdir(self, path: str = "") -> list[str]:
        """Names (not paths) in a folder of the archive, [] if it does not exist."""
        self.fs.invalidate_cache()
        folder = self.full_path(path) if path else self.root
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        except FileNotFoundError:
            return []

    def remove_stale_temporaries(self, path: str) -> list[str]:
        """Delete temporaries a killed run left for ``path`` (local only; S3 never shows a partial object)."""
        if not self.local:
            return []
        folder, _, name = self.full_path(path).rpartition("/")
        removed = []
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if entry.startswith(TEMP_PREFIX) and entry.endswith(f"-{name}"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, entry))
                        removed.append(entry)
        return removed


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


@contextlib.contextmanager
def _wrapped(what: str):
    try:
        yield
    except StorageError:
        raise
    except (OSError, ValueError) as e:
        raise StorageError(f"{what} failed: {e}; check the destination URL, permissions and free space") from e
