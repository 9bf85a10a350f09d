"""Archive access for offline work: list the nights an archive location holds, download one verified.

`listing`: what a folder, ``s3://`` prefix or HTTP(S) directory (UW's layout) holds, with its checksums.
`download`: a night's files, resumable and verified against ``MD5SUMS`` and the manifest.
`names`: the one rule for a name an archive lists (only names the archiver writes) and where it lands.
`verified`: what a replay reads, copied once into a private spool while it is verified.
"""

from alertdist.access.download import (
    ChecksumMismatchError,
    DownloadedFile,
    DownloadError,
    DownloadReport,
    download_file,
    download_night,
)
from alertdist.access.listing import (
    ArchiveAccessError,
    ArchiveLocation,
    NightListing,
    RemoteFile,
    list_nights,
    open_location,
)

__all__ = [
    "ArchiveAccessError",
    "ArchiveLocation",
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadReport",
    "DownloadedFile",
    "NightListing",
    "RemoteFile",
    "download_file",
    "download_night",
    "list_nights",
    "open_location",
]
