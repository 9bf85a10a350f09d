"""How a long-running operation reports progress: one small interface, shown by the terminal or by Prefect.

A job describes where it is in one line of text (and, when it knows, the share done); the caller decides where
that goes: `alertdist.cli.progress.ProgressLine` on the terminal, `alertdist.tasks.progress.ArtifactProgress` in
the Prefect UI. Either may drop updates to keep its own pace; a final update is always shown.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoProgress", "Progress"]


class Progress(Protocol):
    def update(self, text: str, fraction: float | None = None, *, final: bool = False) -> None:
        """Where the work is (``fraction`` of it done, when known); ``final`` for the last word."""


class NoProgress:
    """Shows nothing (quiet runs, tests)."""

    def update(self, text: str, fraction: float | None = None, *, final: bool = False) -> None:
        return None
