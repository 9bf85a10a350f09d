"""Allocator settings for the archiver, which makes and frees tens of megabytes of buffers every second.

Both allocators underneath hand freed memory back to the system at once, so the next batch faults it in again,
zeroed: 300,000 page faults for a 20,000-alert night, 7 % of the archiver's CPU. Keeping it costs nothing, as
the same sizes are asked for again a moment later, and peak memory stays what the pipeline needs.
- glibc malloc (Python's large bytes objects: packets, tarball pieces, Parquet pages) trims the top of its heap
  beyond twice the largest recent block, and maps big blocks afresh: trim beyond 256 MB, map beyond 32 MB.
- mimalloc (inside DataFusion, which decodes for Parquet, and inside pyarrow) purges freed pages after 10 ms:
  after 1 s. It reads MIMALLOC_PURGE_DELAY when the library loads, so `slow_mimalloc_purge` runs first thing in
  the `alertdist` command (pyarrow loads with the sub-commands; DataFusion on first use); a value already in the
  environment wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["slow_mimalloc_purge", "tune_allocators"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
_TRIM_THRESHOLD = 256 * 1024 * 1024
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own upper bound for it


def slow_mimalloc_purge() -> None:
    """mimalloc's part (see the module doc): harmless for any command, effective for libraries loaded after it."""
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "1000")


def tune_allocators() -> None:
    """Set both allocators for streaming (see the module doc); on a C library without mallopt, glibc's part is
    skipped."""
    slow_mimalloc_purge()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
