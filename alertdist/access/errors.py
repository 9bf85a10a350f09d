"""The error every archive access raises, in a module of its own so that `names` and `listing` can share it."""

from __future__ import annotations

__all__ = ["ArchiveAccessError"]


class ArchiveAccessError(RuntimeError):
    """An archive location could not be listed or read; the message names the URL and what to check."""
