"""One whole night, end to end: topics, filters, publishing, closing, draining, archiving, verifying.

Each stage is its own flow run in the UI (a subflow); the filters run beside the publisher from the start of
the night and stop by themselves once it is closed and consumed. At the end the night must balance:
published = archived + duplicates dropped, every filter consumed everything, or the run fails and says what is
missing. Events `alertdist.night.opened/closed/archived` let automations (a notification, a page) hook in.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from alertdist.settings import Settings
from alertdist.flows.archive_night import archive_night
from alertdist.flows.filter_night import filter_night
from alertdist.flows.publish import publish_night
from alertdist.flows.topics import create_night_topics, tonight
from alertdist.archive.verify import read_manifest
from alertdist.nights.report import (
    NightReconciliationError, exposure_counts, exposure_plot_markdown, filter_rows, reconcile, summary_rows,
    throughput_rows,
)
from alertdist.nights.state import NightState, end_offsets, mark_night, read_night_state
from alertdist.nights.dates import parse_night
from alertdist.nights.topics import TopicNaming

BUNDLED_FILTERS = ["bright_transients", "solar_system", "variable_stars"]


@task(cache_policy=NO_CACHE, task_run_name="filter-{filter_name}")
def run_filter_stage(filter_name: str, night: str, parallelism: int, bootstrap: str, survey: str) -> list[dict]:
    """The filter's own flow, run from a task so that it can run beside the publisher."""
    return filter_night(filter_name=filter_name, night=night, parallelism=parallelism,
                        bootstrap_servers=bootstrap, survey=survey)


@task(cache_policy=NO_CACHE)
def abort_night(bootstrap: str, naming: TopicNaming, night: str, reason: str) -> None:
    """Close a night whose publishing failed, so the filters drain what arrived and stop instead of waiting."""
    state = read_night_state(bootstrap, naming, night)
    if state is None or not state.closed:
        topics = list(naming.programme_topics(parse_night(night)).values())
        mark_night(bootstrap, naming, NightState(night, "closed", end_offsets(bootstrap, topics),
                                                 {"aborted": reason}))


@task(cache_policy=NO_CACHE)
def report(night: str, published: dict, filters: dict[str, list[dict]], archived: dict, naming: TopicNaming,
           settings: Settings) -> dict:
    manifest = read_manifest(archived["dest"], naming.survey, night, settings.storage_options)
    per_programme = {p: a.counts for p, a in manifest.programmes.items()}
    key = f"{naming.survey}-{night}".lower().replace("_", "-")
    create_table_artifact(summary_rows(published, filters, per_programme, naming.programmes),
                          key=f"night-summary-{key}", description=f"Night {night}: every alert accounted for")
    create_table_artifact(throughput_rows(published), key=f"night-throughput-{key}",
                          description=f"Night {night}: publishing throughput and latency percentiles")
    create_table_artifact(filter_rows(filters), key=f"night-filters-{key}",
                          description=f"Night {night}: filters and their final consumer lag")
    files = [{"programme": a.name, "file": f["path"], "bytes": f["size"], "sha256": f["sha256"],
              "md5": f.get("md5") or ""} for a in manifest.programmes.values() for f in a.files.values()]
    create_table_artifact(files, key=f"night-archive-{key}", description=f"Night {night}: archive files in "
                          f"{archived['dest']}")
    counts = exposure_counts(*_exposures(archived["dest"], manifest, settings.storage_options))
    create_markdown_artifact(exposure_plot_markdown(counts, naming.programmes, f"Alerts per exposure, night {night}"),
                             key=f"night-exposures-{key}", description=f"Night {night}: alerts per exposure")
    problems = reconcile(published, filters, per_programme)
    if problems:
        raise NightReconciliationError(f"night {night} does not balance: " + "; ".join(problems))
    return {"night": night, "archive": archived["dest"], "manifest": archived["manifest"],
            "published": sum(published["delivered"].values()), "archived": archived["written"],
            "duplicates": archived["duplicates"], "filters": {n: r["passed"] for n, r in
                                                             zip(filters, filter_rows(filters))}}


def _exposures(dest: str, manifest, storage_options: dict) -> tuple[list[float], list[int]]:
    """Every archived alert's exposure time and programme, read back from the Parquet files."""
    import fsspec
    import pyarrow.parquet as pq

    jds, programids = [], []
    for programid, archive in manifest.programmes.items():
        path = archive.files.get("parquet", {}).get("path")
        if not path:
            continue
        with fsspec.open(f"{dest.rstrip('/')}/{path}", "rb", **storage_options) as f:
            jd = pq.read_table(f, columns=["jd"]).column("jd").to_pylist()
        jds += jd
        programids += [programid] * len(jd)
    return jds, programids


def _event(name: str, naming: TopicNaming, night: str, payload: dict) -> None:
    emit_event(event=f"alertdist.night.{name}", payload=payload,
               resource={"prefect.resource.id": f"alertdist.night.{naming.survey}.{night}",
                         "prefect.resource.name": f"{naming.survey} night {night}"})


@flow(name="night", flow_run_name=lambda: f"night-{flow_run.parameters.get('night') or 'tonight'}")
def night(
    night: str | None = None,
    source: str = "simulate:3000",
    speed: float | None = None,
    filters: list[str] = BUNDLED_FILTERS,
    filter_parallelism: int = 1,
    dest: str | None = None,
    partitions: int = 14,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
) -> dict:
    """Run ``night`` (YYYYMMDD; default tonight) from ``source`` (a drop folder, tarball, or simulate:N[:SEED])."""
    settings = Settings.from_env()
    bootstrap = bootstrap_servers or settings.bootstrap_servers
    naming = TopicNaming(survey=survey or settings.survey, programmes=dict(settings.programmes))
    night_text = night or f"{tonight(settings):%Y%m%d}"
    log = get_run_logger()

    create_night_topics(night=night_text, partitions=partitions, bootstrap_servers=bootstrap, survey=naming.survey)
    _event("opened", naming, night_text, {"source": source})
    running = {name: run_filter_stage.submit(name, night_text, filter_parallelism, bootstrap, naming.survey)
               for name in filters}
    try:
        published = publish_night(source=source, night=night_text, speed=speed, partitions=partitions,
                                  bootstrap_servers=bootstrap, survey=naming.survey)
    except BaseException as e:
        log.error("publishing failed (%s); closing the night so the filters drain and stop", e)
        abort_night(bootstrap, naming, night_text, f"publishing failed: {e}")
        for future in running.values():
            future.wait()
        raise
    _event("closed", naming, night_text, {k: published[k] for k in ("read", "delivered", "rejected")})
    filter_results = {name: future.result() for name, future in running.items()}
    archived = archive_night(night=night_text, dest=dest or settings.archive, bootstrap_servers=bootstrap,
                             survey=naming.survey)
    _event("archived", naming, night_text, {"dest": archived["dest"], "written": archived["written"]})
    return report(night_text, published, filter_results, archived, naming, settings)
