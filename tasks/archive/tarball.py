"""Nightly Avro tarballs in the University of Washington public archive's layout, byte-reproducible.

UW's `ztf_public_YYYYMMDD.tar.gz` is a gzip'd GNU tar of flat members `<candid>.avro` (one packet each, the
bytes ZTF distributed), mode -rwxr--r--, owner 0/0 with empty names, no end padding past the two zero
blocks. We write the same, with what UW leaves to chance fixed so the same alerts always give the same
bytes: members sorted by candid, each member's mtime the alert's own time (candidate.jd, whole seconds),
and a gzip header with mtime 0 and no file name. gzip is ISA-L's (level 1): zlib cannot keep up with a
2,000 alerts/s night on two cores, and ISA-L writes ordinary deflate that every gunzip reads.
"""

from __future__ import annotations

import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

try:
    from isal import isal_zlib
except ImportError as e:  # pragma: no cover - a packaging error, said plainly
    raise ImportError("the archiver needs python-isal for fast gzip: pip install isal") from e

__all__ = [
    "MEMBER_MODE",
    "TarMember",
    "TarballWriter",
    "jd_to_unix",
    "md5sums_text",
    "parse_md5sums",
    "read_members",
    "tarball_name",
]

MEMBER_MODE = 0o744  # -rwxr--r--, as in UW's files
_BLOCK = 512
_GZIP_LEVEL = 1
_FLUSH_BYTES = 4 * 1024 * 1024
_UNIX_EPOCH_JD = 2440587.5


def tarball_name(survey: str, programme: str, night) -> str:
    """``ztf_public_20231012.tar.gz``: survey, programme name, night (a date or YYYYMMDD)."""
    label = night if isinstance(night, str) else f"{night:%Y%m%d}"
    return f"{survey}_{programme}_{label}.tar.gz"


def jd_to_unix(jd: float) -> int:
    """Whole seconds since 1970 of a Julian date (the member mtime of an alert observed at ``jd``)."""
    return int(round((jd - _UNIX_EPOCH_JD) * 86400.0))


def _member_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict"))
    if len(header) != _BLOCK:
        raise ValueError(f"member name {name!r} is too long for one tar header block")
    # UW's writer (Go's archive/tar) fills devmajor/devminor with zeros where Python leaves NULs
    header[329:345] = b"0000000\0" * 2
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


class TarballWriter:
    """Write a .tar.gz member by member to a binary file object; memory stays at a few MB whatever the night.

    Call `add` for each member in the order wanted, then `close` (which does not close ``fileobj``).
    """

    def __init__(self, fileobj) -> None:
        self._out = fileobj
        self._deflate = isal_zlib.compressobj(_GZIP_LEVEL, isal_zlib.DEFLATED, -15)
        self._crc = 0
        self._length = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.members = 0
        # magic, deflate, no flags, mtime 0, XFL 4 (fastest), OS 255 (unknown): nothing varies between runs
        self._out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x04\xff")

    def add(self, name: str, data: bytes, mtime: int) -> None:
        header = _member_header(name, len(data), mtime)
        padding = b"\0" * (-len(data) % _BLOCK)
        for part in (header, data, padding):
            if part:
                self._pending.append(part)
                self._pending_bytes += len(part)
        self.members += 1
        if self._pending_bytes >= _FLUSH_BYTES:
            self._compress_pending()

    def _compress_pending(self) -> None:
        if not self._pending:
            return
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._crc = isal_zlib.crc32(chunk, self._crc)
        self._length += len(chunk)
        compressed = self._deflate.compress(chunk)
        if compressed:
            self._out.write(compressed)

    def close(self) -> None:
        """End the archive (two zero blocks, as Go's archive/tar and UW do) and the gzip stream."""
        self._pending.append(b"\0" * (2 * _BLOCK))
        self._compress_pending()
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._length & 0xFFFFFFFF))


@dataclass(frozen=True)
class TarMember:
    name: str
    size: int
    mode: int
    mtime: int
    uid: int
    gid: int
    uname: str
    gname: str
    data: bytes | None


def read_members(fileobj, *, with_data: bool = True) -> Iterator[TarMember]:
    """Stream the members of a .tar.gz (ours or UW's) from a binary file object, one at a time."""
    from isal import igzip

    with igzip.IGzipFile(fileobj=fileobj, mode="rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        for info in tar:
            tar.members.clear()  # a streaming TarFile still keeps every TarInfo: 100 MB for a big night
            if not info.isfile():
                continue
            data = tar.extractfile(info).read() if with_data else None
            yield TarMember(info.name, info.size, info.mode, info.mtime, info.uid, info.gid,
                            info.uname, info.gname, data)


def md5sums_text(entries: dict[str, str]) -> str:
    """An ``MD5SUMS`` file as UW publishes it: ``<md5>  <file name>`` per line, sorted by name."""
    return "".join(f"{md5}  {name}\n" for name, md5 in sorted(entries.items()))


def parse_md5sums(text: str) -> dict[str, str]:
    """File name -> md5 from an ``MD5SUMS`` text (``md5sum`` output; a ``*`` before binary names is allowed)."""
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        md5, sep, name = line.partition("  ")
        if not sep:
            md5, sep, name = line.partition(" *")
        if not sep or len(md5) != 32:
            raise ValueError(f"MD5SUMS line {number} is not '<md5>  <file name>': {line!r}")
        entries[name] = md5
    return entries
