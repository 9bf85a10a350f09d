"""The end-of-night archive: a closed night's Kafka stream to UW-layout Avro tarballs, Parquet and a manifest.

Modules, one concern each: `stream` (read the night into a candid-ordered spool), `tarball`, `parquet`,
`manifest`, `setaside` (the bytes of what was left out), `storage` (atomic writes to a folder or S3), `verify`
(read it all back), `night` (the order of work).
"""

from alertdist.archive.manifest import NightManifest, ProgrammeArchive
from alertdist.archive.night import (
    ArchiveOptions,
    NightAbortedError,
    NightNotClosedError,
    archive_night,
    closed_state,
    finish_night,
    night_programmes,
)
from alertdist.archive.storage import Destination, StorageError
from alertdist.archive.stream import ArchiveInterrupted, ArchiveStreamError
from alertdist.archive.tarball import MD5SUMS
from alertdist.archive.verify import ArchiveVerificationError, read_manifest, verify_night

__all__ = [
    "MD5SUMS",
    "ArchiveInterrupted",
    "ArchiveOptions",
    "ArchiveStreamError",
    "ArchiveVerificationError",
    "Destination",
    "NightAbortedError",
    "NightManifest",
    "NightNotClosedError",
    "ProgrammeArchive",
    "StorageError",
    "archive_night",
    "closed_state",
    "finish_night",
    "night_programmes",
    "read_manifest",
    "verify_night",
]
