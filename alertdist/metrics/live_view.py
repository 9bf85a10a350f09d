"""What the night flow shows while the night runs: its consumer groups' lag, the publisher's and the filters'
latency, with links to the matching Prometheus graphs; and which Prometheus alerts started or stopped firing.

No Prefect here: `tasks/live_ops.py` turns a `LiveView` into an artifact every few seconds and alert changes into
Prefect events.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
import urllib.request

from alertdist.metrics.lag import LagMonitor
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicNaming

__all__ = ["AlertChanges", "LiveView", "graph_link"]


def graph_link(prometheus_url: str, expr: str, range_: str = "1h") -> str:
    """A Prometheus graph page of ``expr`` over the last ``range_``."""
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_})
    return f"{prometheus_url}/graph?{query}"


def _query(prometheus_url: str, expr: str, timeout: float = 3.0) -> list[dict]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)["data"]["result"]


def _alerts(prometheus_url: str, timeout: float = 3.0) -> list[dict]:
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=timeout) as response:
        return json.load(response)["data"]["alerts"]


class LiveView:
    """One night's live figures: lag straight from Kafka (works without Prometheus), latency from Prometheus."""

    def __init__(self, bootstrap_servers: str, naming: TopicNaming, night: dt.date, prometheus_url: str):
        self.night, self.naming, self.prometheus_url = night, naming, prometheus_url.rstrip("/")
        tag = format_night(night)
        # the night's groups: its filters' and the archiver's (their ids name the night)
        self.lag = LagMonitor(bootstrap_servers, groups=f".*{tag}.*")

    def close(self) -> None:
        self.lag.close()

    def snapshot(self) -> dict:
        now = time.time()
        groups: dict[str, dict] = {}
        for x in self.lag.measure():
            row = groups.setdefault(x.group, {"group": x.group, "lag_messages": 0, "lag_seconds": 0.0})
            row["lag_messages"] += x.messages
            row["lag_seconds"] = max(row["lag_seconds"], round(x.seconds(now), 1))
        latency = {}
        try:
            expr = (
                "histogram_quantile(0.99, sum by (le, filter) (rate(alertdist_end_to_end_latency_seconds_bucket[5m])))"
            )
            for sample in _query(self.prometheus_url, expr):
                latency[sample["metric"].get("filter", "?")] = float(sample["value"][1])
        except (OSError, ValueError, KeyError):
            latency = None  # Prometheus not running: lag still shows
        return {
            "at": dt.datetime.fromtimestamp(now, dt.UTC),
            "groups": sorted(groups.values(), key=lambda r: r["group"]),
            "p99_latency_s": latency,
        }

    def markdown(self, snapshot: dict) -> str:
        link = self.prometheus_url
        lines = [
            f"### Night {format_night(self.night)}: live at {snapshot['at']:%H:%M:%S} UTC",
            "",
            "| consumer group | lag (messages) | lag (s) | graph |",
            "|---|---:|---:|---|",
        ]
        for row in snapshot["groups"]:
            expr = f'sum by (group) (alertdist_consumer_lag_messages{{group="{row["group"]}"}})'
            lines.append(
                f"| {row['group']} | {row['lag_messages']} | {row['lag_seconds']} | [graph]({graph_link(link, expr)}) |"
            )
        if not snapshot["groups"]:
            lines.append("| (no group has committed yet) | | | |")
        lines += ["", "| filter | p99 publish-to-read latency (s) |", "|---|---:|"]
        latency = snapshot["p99_latency_s"]
        if latency is None:
            lines.append(f"| (Prometheus not answering at {link}: `alertdist prometheus start`) | |")
        else:
            lines += [f"| {name} | {value:.3f} |" for name, value in sorted(latency.items())] or ["| (no data yet) | |"]
        lines += [
            "",
            f"[End-to-end latency]({graph_link(link, 'alertdist:end_to_end_latency_seconds:p99_5m')}) · "
            f"[Publisher rate]({graph_link(link, 'alertdist:publisher_packets_read:rate1m')}) · "
            f"[Alerts]({link}/alerts)",
        ]
        return "\n".join(lines)


class AlertChanges:
    """Which Prometheus alerts began or ceased firing since the last look."""

    def __init__(self, prometheus_url: str):
        self.prometheus_url = prometheus_url.rstrip("/")
        self.firing: dict[tuple, dict] = {}

    def poll(self) -> tuple[list[dict], list[dict]]:
        """(newly firing, resolved) alerts; nothing when Prometheus does not answer."""
        try:
            alerts = _alerts(self.prometheus_url)
        except (OSError, ValueError, KeyError):
            return [], []
        now = {tuple(sorted(a["labels"].items())): a for a in alerts if a.get("state") == "firing"}
        fired = [a for key, a in now.items() if key not in self.firing]
        resolved = [a for key, a in self.firing.items() if key not in now]
        self.firing = now
        return fired, resolved
