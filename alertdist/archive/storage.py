"""Where the archive lands: an fsspec URL (a local folder, or ``s3://bucket/prefix`` on any S3-compatible store).

Every write is atomic, so a crash never leaves a partial file under a final name and a re-run simply replaces a night's
files: locally a file is written under a temporary name in the same folder (``.tmp-<uuid>-<name>``), synced, and moved
into place with ``os.replace``, and then the folder is synced too (and the parent of each folder the write created), so
the new name survives a power cut as well as the bytes; on S3 the object is uploaded under its final key, which S3 makes
visible only when the single PUT or the multipart upload completes (a failed upload is aborted). Files are checksummed
while they are written (sha256, CRC-32, and md5 where asked for), so nobody reads them back just to checksum them; the
CRC-32 (~0.05 ns a byte, 10x cheaper than sha256) is what the read-back right after writing compares, proving the stored
bytes are the bytes whose sha256 the manifest records.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from isal import isal_zlib

from alertdist.atomic import sync_folder

__all__ = [
    "TEMP_PREFIX",
    "Destination",
    "FileDigest",
    "HashingWriter",
    "StorageError",
    "open_filesystem",
]

TEMP_PREFIX = ".tmp-"
_READ_BLOCK = 8 * 1024 * 1024
# A file written in the background is synced to disk as it grows, so the fsync before its rename (which the
# archiver waits for between programmes) has little left to do
_SYNC_EVERY = 64 * 1024 * 1024


class StorageError(RuntimeError):
    """A file of the archive could not be written, moved or read."""


def open_filesystem(url: str, storage_options: dict | None, error: type[Exception], what: str) -> tuple:
    """(fsspec file system, root path without a trailing ``/``) of a local path or URL. Raises ``error`` ("cannot
    open <what> <url>") when fsspec cannot open it: an unknown protocol, a missing driver such as s3fs."""
    try:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise error(f"cannot open {what} {url!r}: {e}") from e
    return fs, root.rstrip("/")


@dataclass(frozen=True)
class FileDigest:
    """Size and checksums of one written file (``path`` relative to the destination root).

    ``md5`` only where a published MD5SUMS needs it (the tarballs, as UW publishes); ``crc32`` is 8 hex digits."""

    path: str
    size: int
    sha256: str
    md5: str | None
    crc32: str


class HashingWriter:
    """A write-only file object that checksums and counts what passes through it to ``raw``.

    md5 (~1.3 ns a byte here) is the dearest part of archiving, so it is computed only with ``md5=True``.
    With ``background=True`` the hashing and the writing happen on a thread of their own, fed through a short
    queue, so the thread producing the bytes does not wait for them; `finish` waits until everything is hashed and
    written and re-raises the first error of that thread.
    """

    _QUEUE_ITEMS = 4

    def __init__(self, raw, *, background: bool = False, md5: bool = True, sync_every: int | None = None) -> None:
        self.raw = raw
        self.size = 0
        self._sync_every = sync_every  # a local file: fdatasync each time this many bytes were written
        self._unsynced = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5() if md5 else None
        self._crc32 = 0
        self._discarded = False
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        if background:
            self._queue = queue.Queue(self._QUEUE_ITEMS)
            self._thread = threading.Thread(target=self._drain, name="hash-write", daemon=True)
            self._thread.start()

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self._discarded:
            return size
        if self._queue is None:
            self._consume(data)
        else:
            if self._error is not None:
                raise StorageError(f"writing failed: {self._error}") from self._error
            self._queue.put(bytes(data))  # bytes(b) is b itself; anything mutable is copied
        self.size += size
        return size

    def _consume(self, data) -> None:
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        self._crc32 = isal_zlib.crc32(data, self._crc32)
        self.raw.write(data)
        if self._sync_every:
            self._unsynced += len(data)
            if self._unsynced >= self._sync_every:  # the disk works while the CPU does, not all at the end
                self.raw.flush()
                os.fdatasync(self.raw.fileno())
                self._unsynced = 0

    def _drain(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                if self._error is None and not self._discarded:
                    self._consume(data)
            except BaseException as e:  # handed to the producing thread by write() and finish()
                self._error = e
            finally:
                self._queue.task_done()

    def finish(self) -> None:
        """Wait until every byte is hashed and handed to ``raw``; raise what went wrong on the way."""
        self._stop_thread()
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        """Drop everything from now on (the file is being abandoned): a late write, e.g. from a writer's
        finaliser, goes nowhere instead of failing on a closed file."""
        self._discarded = True
        self._stop_thread()

    def _stop_thread(self) -> None:
        """Let the background thread handle what is queued, then end (from now on writes are direct)."""
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        """Nothing to do: the `Destination` that opened the file finishes and closes it (a wrapper such as
        pyarrow's buffered stream may call this when it is dropped)."""

    def flush(self) -> None:
        if self._queue is None:
            self.raw.flush()

    def digest(self, path: str) -> FileDigest:
        return FileDigest(
            path,
            self.size,
            self._sha256.hexdigest(),
            self._md5 and self._md5.hexdigest(),
            f"{self._crc32 & 0xFFFFFFFF:08x}",
        )

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
        self.fs, self.root = open_filesystem(self.url, storage_options, StorageError, "archive destination")
        self.local = "file" in _protocols(self.fs)

    def full_path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def display(self, path: str) -> str:
        """The file's URL as a user would type it."""
        return self.full_path(path) if self.local else f"{_protocols(self.fs)[0]}://{self.full_path(path)}"

    @contextlib.contextmanager
    def open_atomic(self, path: str, *, background: bool = False, md5: bool = True) -> Iterator[HashingWriter]:
        """Yield a writer for ``path``; the file appears under its final name only if the block succeeds.

        ``background``: hash and write on a thread of the writer's own; ``md5``: compute it (see `HashingWriter`)."""
        final = self.full_path(path)
        folder, _, name = final.rpartition("/")
        created = _missing_folders(folder) if self.local else []
        try:
            if folder:
                self.fs.makedirs(folder, exist_ok=True)
        except _storage_errors() as e:
            raise StorageError(
                f"cannot create folder {folder!r} for {self.display(path)}: {e}; check the destination "
                "URL, its credentials and that the store is reachable"
            ) from e
        if self.local:
            temp = f"{folder}/{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
            with _wrapped(f"writing {temp}"):
                raw = open(temp, "wb", buffering=1024 * 1024)
            writer = HashingWriter(raw, background=background, md5=md5, sync_every=_SYNC_EVERY if background else None)
            try:
                yield writer
                with _wrapped(f"finishing {temp}"):
                    writer.finish()
                    raw.flush()
                    os.fsync(raw.fileno())
                    raw.close()
                    os.replace(temp, final)
                    for changed in [folder or ".", *(f.rpartition("/")[0] or "/" for f in created)]:
                        sync_folder(changed)
            except BaseException:
                writer.discard()
                raw.close()
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        else:
            with _wrapped(f"opening {self.display(path)} for writing"):
                raw = self.fs.open(final, "wb", block_size=64 * 1024 * 1024)
            writer = HashingWriter(raw, background=background, md5=md5)
            try:
                yield writer
                with _wrapped(f"uploading {self.display(path)}"):
                    writer.finish()
                    raw.close()  # completes the upload: only now does the object exist
            except BaseException:
                writer.discard()
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

    def listdir(self, path: str = "") -> list[str]:
        """Names (not paths) in a folder of the archive, [] if it does not exist."""
        self.fs.invalidate_cache()
        folder = self.full_path(path) if path else self.root
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        except FileNotFoundError:
            return []

    def remove(self, path: str) -> bool:
        """Delete ``path`` if it exists (a file an earlier run wrote that this one has no content for)."""
        if not self.exists(path):
            return False
        with _wrapped(f"deleting {self.display(path)}"):
            self.fs.rm_file(self.full_path(path))
        return True

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


def _missing_folders(folder: str) -> list[str]:
    """The folders on the way to ``folder`` that do not exist yet (deepest first): made by this write."""
    missing = []
    while folder and folder != "/" and not os.path.isdir(folder):
        missing.append(folder)
        folder = folder.rpartition("/")[0]
    return missing


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What a store raises when it fails: OS errors, and for S3 the errors of botocore and aiohttp underneath
    (looked up only once s3fs has loaded them: importing aiohttp for a local archive costs 0.1 s)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    if "botocore" in sys.modules:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    if "aiohttp" in sys.modules:
        from aiohttp import ClientError as HttpClientError

        errors.append(HttpClientError)
    return tuple(errors)


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


@contextlib.contextmanager
def _wrapped(what: str):
    try:
        yield
    except StorageError:
        raise
    except _storage_errors() as e:
        raise StorageError(f"{what} failed: {e}; check the destination URL, permissions and free space") from e
