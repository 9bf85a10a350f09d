"""Progress in the Prefect UI: a progress artifact and a log line, never more often than every few seconds.

The UI being down never stops the night: a failed update is logged as a warning and the work goes on.
"""

from __future__ import annotations

import re
import time

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

__all__ = ["ArtifactProgress", "artifact_key"]


def artifact_key(*parts: object) -> str:
    """An artifact key from its parts: lower case, dashes for anything Prefect does not allow."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower())


class ArtifactProgress:
    """The Prefect `Progress`: the artifact ``key`` shows the share done, the run's log the text."""

    def __init__(self, key: str, description: str, every_s: float = 5.0) -> None:
        """Made in the task's own thread (its run context); updates may then come from any thread."""
        self.key, self.description, self.every_s = key, description, every_s
        self.logger = get_run_logger()
        self.artifact = None
        self.shown, self.last = 0.0, float("-inf")
        self._send(lambda: create_progress_artifact(0.0, key=key, description=description))

    def update(self, text: str, fraction: float | None = None, *, final: bool = False) -> None:
        now = time.monotonic()
        share = self.shown if fraction is None else round(100.0 * min(max(fraction, 0.0), 1.0), 1)
        if not final and now - self.last < self.every_s and share - self.shown < 5.0:
            return
        self.last, self.shown = now, share
        self.logger.info("%s", text)
        if self.artifact is not None:
            self._send(
                lambda: update_progress_artifact(self.artifact, share, description=f"{self.description}: {text}")
            )

    def _send(self, call) -> None:
        try:
            result = call()
        except Exception as e:
            self.logger.warning("could not update the progress artifact %s: %s", self.key, e)
            return
        if self.artifact is None:
            self.artifact = result
