"""Progress in the Prefect UI: a progress artifact and a log line, never more often than every few seconds.

The UI being down never stops the night: a failed update is logged as a warning and the work goes on. Updates
go to the API from a thread of their own with one reused client, so the pipeline thread that reports progress
never waits on the server (Prefect's own helper opens a new client, TLS context included, for every update).
"""

from __future__ import annotations

import contextvars
import re
import threading
import time

from prefect import get_client, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.client.schemas.actions import ArtifactUpdate

__all__ = ["ArtifactProgress", "artifact_key"]


def artifact_key(*parts: object) -> str:
    """An artifact key from its parts: lower case, dashes for anything Prefect does not allow."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower())


class ArtifactProgress:
    """The Prefect `Progress`: the artifact ``key`` shows the share done, the run's log the text."""

    FLUSH_TIMEOUT_S = 10.0  # a final update waits this long at most for the server

    def __init__(self, key: str, description: str, every_s: float = 5.0) -> None:
        """Made in the task's own thread (its run context); updates may then come from any thread."""
        self.key, self.description, self.every_s = key, description, every_s
        self.logger = get_run_logger()
        self.shown, self.last = 0.0, float("-inf")
        self._changed = threading.Condition()
        self._pending: ArtifactUpdate | None = None
        self._sending = False
        self.artifact = None
        try:
            self.artifact = create_progress_artifact(0.0, key=key, description=description)
        except Exception as e:
            self.logger.warning("could not create the progress artifact %s: %s", key, e)
            return
        sender = contextvars.copy_context()  # the run's settings (its API URL) in the sending thread too
        threading.Thread(target=sender.run, args=(self._send_forever,), name="progress-artifact", daemon=True).start()

    def update(self, text: str, fraction: float | None = None, *, final: bool = False) -> None:
        """Throttled; a ``final`` update always goes and is on the server (or given up on) when this returns."""
        now = time.monotonic()
        share = self.shown if fraction is None else round(100.0 * min(max(fraction, 0.0), 1.0), 1)
        if not final and now - self.last < self.every_s and share - self.shown < 5.0:
            return
        self.last, self.shown = now, share
        self.logger.info("%s", text)
        if self.artifact is None:
            return
        with self._changed:
            self._pending = ArtifactUpdate(data=share, description=f"{self.description}: {text}")
            self._changed.notify_all()
            if final:
                self._changed.wait_for(lambda: self._pending is None and not self._sending, self.FLUSH_TIMEOUT_S)

    def _send_forever(self) -> None:
        """Send the latest update whenever there is one; older ones it replaced are never sent."""
        client = get_client(sync_client=True)
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending is not None)
                update, self._pending, self._sending = self._pending, None, True
            try:
                client.update_artifact(artifact_id=self.artifact, artifact=update)
            except Exception as e:
                self.logger.warning("could not update the progress artifact %s: %s", self.key, e)
            with self._changed:
                self._sending = False
                self._changed.notify_all()
