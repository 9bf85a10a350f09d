"""The archive task: the same pipelined archiver as `alertdist archive`, retried as a whole on transient trouble.

Retried on Kafka and storage hiccups and a night not closed yet, never on a bug or a verification failure.
Every write is atomic and a re-run rewrites identical files, so a retry (or a backfill) cannot corrupt a night.
"""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.artifacts import create_table_artifact

from alertdist.archive import ArchiveOptions, ArchiveStreamError, NightNotClosedError, StorageError
from alertdist.jobs import archive
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import format_night
from alertdist.settings import Settings
from alertdist.tasks.policy import task_label, transient_retries
from alertdist.tasks.progress import ArtifactProgress, artifact_key

__all__ = ["archive_night"]


@task(
    **transient_retries([60, 300, 900], StorageError, ArchiveStreamError, NightNotClosedError),
    task_run_name=task_label("archive-{night}"),
)
def archive_night(
    settings: Settings,
    night: dt.date,
    dest: str,
    programmes: list[int] | None,
    options: ArchiveOptions,
    partial: bool = False,
) -> dict:
    label = format_night(night)
    progress = ArtifactProgress(artifact_key("archive", settings.survey, label), f"Archiving night {label}")
    with stop_on_signals() as stop:
        manifest = archive.archive_night(
            settings,
            night,
            dest=dest,
            programmes=programmes,
            options=options,
            partial=partial,
            progress=progress,
            stop=stop,
        )
    create_table_artifact(
        manifest.file_rows(with_counts=True),
        key=artifact_key("archive-summary", settings.survey, label),
        description=f"Night {label} archived to {dest} and verified"
        + (f"; {manifest.note()}" if manifest.partial else ""),
    )
    return {"night": label, "dest": dest, "manifest": manifest.path, "partial": manifest.partial, **manifest.totals()}
