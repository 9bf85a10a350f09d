"""Opening, aborting and accounting for a night: what the dusk flow, the CLI and the night flow share."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from alertdist.archive.verify import read_manifest
from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import format_night
from alertdist.nights.report import (
    exposure_counts,
    exposure_plot_markdown,
    filter_rows,
    reconcile,
    summary_rows,
    throughput_rows,
)
from alertdist.nights.state import ABORTED, NightState, end_offsets, known_nights, mark_night, read_night_state
from alertdist.nights.topics import TopicSettings, ensure_night_topics
from alertdist.security import ADMIN, secure_night
from alertdist.settings import Settings

__all__ = ["NightSummary", "OpenedNight", "abort_night", "fresh_night", "open_night", "summarise_night"]


@dataclass(frozen=True)
class OpenedNight:
    topics: dict[str, str]  # topic -> "created" or "exists" (with any settings that drifted)
    acls: int  # ACL bindings applied for the registered users


def open_night(settings: Settings, night: dt.date, topic_settings: TopicSettings = TopicSettings()) -> OpenedNight:
    """The night's topics (idempotent; drift reported) and its readers' ACLs, before anything is published: the
    one place a night is opened, once per run (the dusk step, `alertdist topics create`, a publish run on its own)."""
    kafka = settings.kafka(ADMIN)
    topics = ensure_night_topics(admin_client(kafka), settings.naming, night, topic_settings)
    return OpenedNight(topics, secure_night(kafka, settings.naming, night))


def fresh_night(settings: Settings) -> dt.date:
    """Tonight if this cluster has never opened it, else the latest earlier night it has never opened.

    The simulated main job (`alertdist night` without ``--night``) runs on this night, so running it again the
    same day runs a new night instead of failing on tonight's, already closed; an earlier date, never a future
    one, so a demo night cannot take the name of a real night still to come."""
    known = known_nights(settings.kafka(ADMIN), settings.naming)
    night = settings.tonight()
    while format_night(night) in known:
        night -= dt.timedelta(days=1)
    return night


def abort_night(settings: Settings, night: dt.date, reason: str) -> bool:
    """End a night whose publishing failed as ``aborted``, so the filters drain what arrived and stop instead of
    waiting, and the archive never takes it for a whole night (it needs ``--partial``).

    Returns whether it ended the night (False: it was closed or aborted already)."""
    kafka = settings.kafka(ADMIN)  # the publisher that should have closed it may be what failed
    state = read_night_state(kafka, settings.naming, night)
    if state is not None and state.ended:
        return False
    topics = list(settings.naming.programme_topics(night).values())
    mark_night(
        kafka,
        settings.naming,
        NightState(format_night(night), ABORTED, end_offsets(kafka, topics), {"aborted": reason}),
    )
    return True


@dataclass
class NightSummary:
    """Every table an operator reads about a night, and what does not balance (empty when all is accounted for)."""

    summary: list[dict]
    throughput: list[dict]
    filters: list[dict]
    files: list[dict]
    exposure_plot: str
    problems: list[str]


def summarise_night(
    settings: Settings, night: dt.date, published: dict, filters: dict[str, list[dict]], dest: str
) -> NightSummary:
    """Published, filtered and archived counts side by side, read back from the archive's manifest and Parquet."""
    manifest = read_manifest(dest, settings.survey, format_night(night), settings.storage_options)
    per_programme = {p: a.counts for p, a in manifest.programmes.items()}
    files = manifest.file_rows()
    counts = exposure_counts(*_exposures(dest, manifest, settings.storage_options))
    return NightSummary(
        summary=summary_rows(published, filters, per_programme, settings.programmes),
        throughput=throughput_rows(published),
        filters=filter_rows(filters),
        files=files,
        exposure_plot=exposure_plot_markdown(
            counts, settings.programmes, f"Alerts per exposure, night {format_night(night)}"
        ),
        problems=reconcile(published, filters, per_programme),
    )


def _exposures(dest: str, manifest, storage_options: dict) -> tuple[list[float], list[int]]:
    """Every archived alert's exposure time and programme, read back from the Parquet files."""
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
