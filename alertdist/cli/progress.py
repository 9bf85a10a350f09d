"""The progress line every long-running command shows on stderr (the terminal's `Progress`)."""

from __future__ import annotations

import shutil
import sys
import time

__all__ = ["ProgressLine"]


class ProgressLine:
    """One stderr line rewritten in place on a terminal (at most 5 times a second); a plain line every 10 s
    when stderr is a file or a pipe, so logs stay readable."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet, self.tty, self.last = label, quiet, sys.stderr.isatty(), 0.0

    def update(self, text: str, fraction: float | None = None, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet:
            return
        if fraction is not None:
            text = f"[{'#' * int(min(max(fraction, 0.0), 1.0) * 20):<20}] {text}"
        if self.tty and (final or now - self.last >= 0.2):
            sys.stderr.write(f"\r{_fit(f'{self.label}: {text}')}\033[K" + ("\n" if final else ""))
        elif not self.tty and (final or now - self.last >= 10):
            sys.stderr.write(f"{self.label}: {text}\n")
        else:
            return
        self.last = now
        sys.stderr.flush()


def _fit(line: str) -> str:
    """The line cut to the terminal's width: a longer one wraps, and `\r` then rewrites only its last row."""
    width = shutil.get_terminal_size().columns - 1
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"
