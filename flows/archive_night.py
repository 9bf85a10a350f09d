"""Archive a closed night at dawn: per programme a UW-layout tarball and a Parquet file, then manifest and checks.

Each programme is its own task, retried only on transient trouble (Kafka unreachable, storage errors, the night
not closed yet); every write is atomic, so a retry or a backfill can never corrupt a night. The last task reads
everything back against the manifest and the closing offsets and fails the flow with what is missing.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from alertdist.runtime import tune_allocators
from alertdist.settings import Settings
from alertdist.flows.topics import tonight
from alertdist.archive import (
    ArchiveOptions, NightNotClosedError, ProgrammeArchive, StorageError, archive_programme, closed_state,
    finish_night, night_programmes, verify_night,
)
from alertdist.archive.stream import ArchiveStreamError
from alertdist.kafka.errors import is_transient
from alertdist.nights.topics import TopicNaming, parse_night


def retry_if_transient(task, task_run, state) -> bool:
    """Retry Kafka and storage hiccups and a night not closed yet; never a bug or a verification failure."""
    try:
        state.result()
    except (StorageError, ArchiveStreamError, NightNotClosedError, ConnectionError, TimeoutError):
        return True
    except Exception as e:
        return is_transient(e)
    return False


_policy = dict(retries=3, retry_delay_seconds=[60, 300, 900], retry_condition_fn=retry_if_transient,
               cache_policy=NO_CACHE)


@task(**_policy)
def check_closed(bootstrap: str, naming: TopicNaming, night: str, programmes: list[int] | None):
    state = closed_state(bootstrap, naming, parse_night(night))
    return state, night_programmes(naming, parse_night(night), state, programmes)


@task(**_policy, task_run_name="archive-programme-{programid}")
def archive_one(bootstrap: str, naming: TopicNaming, night: str, programid: int, dest: str, state,
                options: ArchiveOptions) -> ProgrammeArchive:
    key = re.sub(r"[^a-z0-9-]+", "-", f"archive-{naming.survey}-{night}-{programid}".lower())
    artifact = create_progress_artifact(0.0, key=key, description=f"Archiving programme {programid} of {night}")
    shown = [-1.0]

    def report(stage: str, done: int, total: int) -> None:
        share = round(100.0 * (0.5 if stage == "write" else 0.0) + 50.0 * done / max(total, 1))
        if share - shown[0] >= 5:  # every 5 %: the UI being down must never stop the night
            shown[0] = share
            try:
                update_progress_artifact(artifact, min(share, 100.0), description=f"{stage} {done}/{total}")
            except Exception as e:
                get_run_logger().warning("could not update the progress artifact: %s", e)

    return archive_programme(bootstrap, naming, night, programid, dest, state, options, progress=report)


@task(**_policy)
def finish_and_verify(naming: TopicNaming, night: str, dest: str, state, results: list[ProgrammeArchive],
                      options: ArchiveOptions) -> dict:
    manifest = finish_night(naming, night, dest, results, options.storage_options)
    verify_night(dest, manifest, state, options.storage_options, checksum="crc32")  # just written: see verify.py
    rows = [{"programme": a.name, "file": f["path"], "bytes": f["size"], "sha256": f["sha256"],
             "md5": f.get("md5") or "",
             **{k: a.counts[k] for k in ("read", "written", "duplicates", "rejected")}}
            for a in manifest.programmes.values() for f in a.files.values()]
    create_table_artifact(rows, key=re.sub(r"[^a-z0-9-]+", "-", f"archive-summary-{naming.survey}-{night}".lower()),
                          description=f"Night {night} archived to {dest} and verified")
    return {"night": night, "dest": dest, "manifest": manifest.path, **manifest.totals()}


@flow(name="archive-night", flow_run_name=lambda: f"archive-{flow_run.parameters.get('night') or 'last-night'}")
def archive_night(night: str | None = None, dest: str | None = None, programmes: list[int] | None = None,
                  bootstrap_servers: str | None = None, survey: str | None = None, work_dir: str | None = None,
                  row_group_rows: int = 10_000) -> dict:
    """Archive ``night`` (YYYYMMDD; default the night now ending at the site) to ``dest`` (default the settings')."""
    tune_allocators()
    settings = Settings.from_env()
    bootstrap = bootstrap_servers or settings.bootstrap_servers
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    night_text = night or f"{tonight(settings):%Y%m%d}"
    target = dest or settings.archive
    options = ArchiveOptions(storage_options=settings.storage_options, work_dir=work_dir,
                             row_group_rows=row_group_rows)
    state, wanted = check_closed(bootstrap, naming, night_text, programmes)
    results = [archive_one(bootstrap, naming, night_text, p, target, state, options) for p in wanted]
    return finish_and_verify(naming, night_text, target, state, results, options)
