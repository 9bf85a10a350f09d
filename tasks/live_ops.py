"""The night flow's live panel: an artifact refreshed every ~10 s with the night's lag and latency (links to the
Prometheus graphs), and each Prometheus alert that starts or stops firing as a Prefect event
(``alertdist.alert.firing`` / ``alertdist.alert.resolved``) that an automation can act on (a notification, a page).

It runs in a thread of the flow's process, in the flow run's context, from `start_live_panel` until `stop`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading

from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from alertdist.metrics.live_view import AlertChanges, LiveView
from alertdist.nights.dates import format_night
from alertdist.settings import Settings

__all__ = ["LivePanel", "alert_event", "start_live_panel"]

_log = logging.getLogger("alertdist.live")


def alert_event(state: str, alert: dict) -> None:
    """One Prometheus alert as a Prefect event; the resource is the alert and its labels (night, group...)."""
    labels = alert.get("labels", {})
    name = labels.get("alertname", "unknown")
    detail = ".".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    emit_event(
        event=f"alertdist.alert.{state}",
        resource={
            "prefect.resource.id": f"alertdist.alert.{name}" + (f".{detail}" if detail else ""),
            "prefect.resource.name": name,
            **{f"alertdist.{k}": str(v) for k, v in labels.items()},
        },
        payload={"labels": labels, "annotations": alert.get("annotations", {}), "value": alert.get("value")},
    )


class _NoPanel:
    def stop(self) -> None:
        pass


class LivePanel:
    def __init__(self, settings: Settings, night: dt.date, every_s: float, *, public: bool = False):
        prometheus = f"http://127.0.0.1:{settings.prometheus_port}"
        readers = settings.public_kafka("admin") if public else settings.kafka("admin")  # where the groups are
        self.view = LiveView(readers, settings.naming, night, prometheus)
        self.alerts = AlertChanges(prometheus)
        self.key = f"night-live-{settings.survey}-{format_night(night)}".lower().replace("_", "-")
        self.every_s = every_s
        self.stop_event = threading.Event()
        self.updates = 0
        self.emitted: list[tuple[str, str]] = []  # (firing | resolved, alertname), in order
        self.thread: threading.Thread | None = None

    def once(self) -> None:
        try:
            snapshot = self.view.snapshot()
            create_markdown_artifact(self.view.markdown(snapshot), key=self.key, description="live lag and latency")
            self.updates += 1
        except Exception as e:  # the panel must never fail the night
            _log.warning("live panel update failed: %s", e)
        fired, resolved = self.alerts.poll()
        for state, alerts in (("firing", fired), ("resolved", resolved)):
            for alert in alerts:
                alert_event(state, alert)
                self.emitted.append((state, alert["labels"].get("alertname", "")))

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.once()
            self.stop_event.wait(self.every_s)

    def stop(self) -> None:
        if self.thread is None:  # never started (see `start_live_panel`)
            return
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)
        self.once()  # the final figures
        self.view.close()


def start_live_panel(
    settings: Settings, night: dt.date, *, every_s: float = 10.0, public: bool = False
) -> LivePanel | _NoPanel:
    """Start the panel in a thread carrying this flow run's context (artifacts and events belong to it);
    ``public``: the night's readers are on the public cluster (two-tier). A panel that cannot start (no admin
    login on a secured cluster) is logged and skipped: it must never fail the night."""
    try:
        panel = LivePanel(settings, night, every_s, public=public)
    except Exception as e:
        _log.warning("no live panel for night %s: %s", format_night(night), e)
        return _NoPanel()
    context = contextvars.copy_context()
    panel.thread = threading.Thread(target=context.run, args=(panel._run,), name="live-panel", daemon=True)
    panel.thread.start()
    return panel
