"""Archive a closed night: the one pipelined archiver, run by `alertdist archive` and by `archive-at-dawn` alike."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import replace

from alertdist.archive import ArchiveOptions, NightManifest
from alertdist.archive import archive_night as archive_pipeline
from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.metrics.catalog import archive_finished, archive_started
from alertdist.nights.dates import format_night
from alertdist.runtime import tune_allocators
from alertdist.security import ARCHIVER
from alertdist.settings import Settings

__all__ = ["ArchiveProgress", "archive_night"]


def archive_night(
    settings: Settings,
    night: dt.date,
    *,
    dest: str | None = None,
    programmes: list[int] | None = None,
    options: ArchiveOptions = ArchiveOptions(),
    verify: bool = True,
    partial: bool = False,
    progress: Progress = NoProgress(),
    stop: threading.Event | None = None,
) -> NightManifest:
    """Archive ``night`` to ``dest`` (default the settings' archive) and verify it; returns the manifest.
    An aborted night only with ``partial`` (its manifest then says so); else `NightAbortedError`.

    Two programmes are read from Kafka at a time, the smallest written last and each read back while the next
    is written (see `alertdist.archive.night`); every write is atomic, so a retry of the whole night is safe.
    """
    tune_allocators()
    serve_metrics(settings, "archiver")
    archive_started(format_night(night))
    if options.storage_options is None:
        options = replace(options, storage_options=settings.storage_options)
    shown = ArchiveProgress(progress, len(programmes or settings.programmes))
    try:
        return archive_pipeline(
            settings.kafka(ARCHIVER),
            settings.naming,
            night,
            dest or settings.archive,
            options,
            programmes=programmes,
            verify=verify,
            partial=partial,
            stop=stop,
            progress=shown,
        )
    except BaseException:
        archive_finished(format_night(night), ok=False)
        raise
    finally:
        shown.close()


class ArchiveProgress:
    """While one programme is written the next is read, so the text names every stage under way (programme,
    stage, counts and rate); a finished stage gets a final line of its own. Calls come from reading threads."""

    def __init__(self, progress: Progress, programmes: int) -> None:
        self.progress, self.programmes = progress, max(programmes, 1)
        self.stages: dict[tuple[int, str], tuple[int, int, float]] = {}  # (programme, stage) -> done, total, start
        self.shares: dict[tuple[int, str], float] = {}
        self.lock = threading.Lock()

    def __call__(self, programid: int, stage: str, done: int, total: int) -> None:
        with self.lock:
            now = time.monotonic()
            key = (programid, stage)
            started = self.stages[key][2] if key in self.stages else now
            self.stages[key] = (done, total, started)
            self.shares[key] = min(done / total, 1.0) if total else 1.0
            fraction = sum(self.shares.values()) / (2 * self.programmes)
            if done >= total:
                self.progress.update(self._text(now, only=key), fraction, final=True)
                del self.stages[key]
            else:
                self.progress.update(self._text(now), fraction)

    def _text(self, now: float, only: tuple[int, str] | None = None) -> str:
        parts = []
        for (programid, stage), (done, total, started) in self.stages.items():
            if only is not None and (programid, stage) != only:
                continue
            rate = f" ({done / (now - started):,.0f}/s)" if now - started >= 0.5 else ""
            verb = "reading" if stage == "read" else "writing"
            parts.append(f"programme {programid} {verb} {done}/{total}{rate}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.stages:
            self.progress.update(self._text(time.monotonic()), final=True)
