"""Publish a night: open it (topics + ACLs), publish its source, close it. The CLI, the publish flow and the
replay into a night call this: a night is published the same way wherever its packets come from."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.nights import open_night
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.nights.topics import TopicSettings
from alertdist.publish.packets import PacketSource
from alertdist.publish.publisher import DEFAULT_MAX_PACKET_BYTES, PublishProgress, PublishResult, publish
from alertdist.publish.sources import SourceSpec
from alertdist.security import PUBLISHER
from alertdist.settings import Settings

__all__ = ["publish_night"]


def publish_night(
    settings: Settings,
    night: dt.date,
    source: SourceSpec | PacketSource,
    *,
    topics: TopicSettings | None = TopicSettings(),
    check_night: bool = True,
    full_check: bool = False,
    close: bool = True,
    reopen: bool = False,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    progress: Progress = NoProgress(),
    progress_every_s: float = 1.0,
    stop: threading.Event | None = None,
    role: str = PUBLISHER,
) -> PublishResult:
    """Publish every packet of ``source`` into ``night`` and (unless ``close`` is False or it is stopped) close it.

    ``source``: a `SourceSpec`, checked here before anything is created and then opened, or a `PacketSource`
    its caller has opened (the replay's archived night). ``topics``: the settings of the night's topics, created
    first if missing (None: they must exist already). On a secured cluster they must exist: the publisher may not
    create topics or ACLs, the admin does at dusk. ``role``: whose Kafka login publishes (the replay's own).
    """
    stop = stop or threading.Event()
    serve_metrics(settings, role)
    spec = source if isinstance(source, SourceSpec) else None
    if spec is not None:
        spec.check(settings.storage_options)
    if topics is not None and not settings.secured:
        created = [t for t, what in open_night(settings, night, topics).topics.items() if what == "created"]
        if created:
            progress.update(f"created topics {', '.join(created)}", final=True)
    if spec is not None:
        opts = {"stop": stop, "storage_options": settings.storage_options, "max_packet_bytes": max_packet_bytes}
        source = spec.open(night, **opts)
    checks = {"max_packet_bytes": max_packet_bytes, "check_night": check_night, "full_check": full_check}
    shown = {"progress": _shown_on(progress), "progress_every_s": progress_every_s, "total": spec and spec.total}
    result = publish(
        source,
        bootstrap_servers=settings.kafka(role),
        naming=settings.naming,
        night=night,
        site=settings.site,
        stop=stop,
        close_night=close,
        reopen=reopen,
        **checks,
        **shown,
    )
    progress.update(
        f"{result.delivered_total} delivered, {result.rejected_total} rejected; night "
        f"{'closed' if result.closed else 'left open'}",
        1.0 if result.closed else None,
        final=True,
    )
    return result


def _shown_on(progress: Progress) -> Callable[[PublishProgress], None]:
    def show(p: PublishProgress) -> None:
        of = f"/{p.total}" if p.total else ""
        progress.update(
            f"read {p.read}{of}, delivered {p.delivered}, rejected {p.rejected}, failed {p.failed}, "
            f"in flight {p.in_flight}, {p.rate:.0f} alerts/s, {p.elapsed_s:.0f} s",
            min(p.read / p.total, 1.0) if p.total else None,
        )

    return show
