"""What MirrorMaker 2's connectors and tasks say they are doing: Connect's status topic on the public cluster.

Connect writes a JSON record there whenever a connector or a task changes state (key ``status-connector-<name>``
or ``status-task-<name>-<n>``; value ``{"state": "RUNNING" | "FAILED" | "PAUSED" | "UNASSIGNED" | "RESTARTING",
"trace": <the failure's stack trace or null>, "worker_id": ..., "generation": <the worker group's>}``). A task
that failed stays FAILED, copying nothing, while the process idles on: the process check alone cannot see it.
A task record of an older generation than its connector's newest task record is of a task since replaced (a
restart, fewer tasks): left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from alertdist.kafka.reading import latest_by_key
from alertdist.nights.topics import MirrorNames

__all__ = ["MirrorUnit", "mirror_units"]


@dataclass(frozen=True)
class MirrorUnit:
    """One connector or task of MirrorMaker 2 and its latest reported state."""

    kind: str  # "connector" or "task"
    name: str  # e.g. MirrorSourceConnector, MirrorSourceConnector-0
    state: str
    trace: str | None
    generation: int

    @property
    def failed(self) -> bool:
        return self.state == "FAILED"

    @property
    def connector(self) -> str:
        return self.name.rsplit("-", 1)[0] if self.kind == "task" else self.name

    def __str__(self) -> str:
        cause = f": {self.trace.strip().splitlines()[0]}" if self.trace else ""
        return f"{self.kind} {self.name}: {self.state}{cause}"


def mirror_units(public_bootstrap: str, *, timeout: float = 30.0) -> list[MirrorUnit]:
    """Each connector and its current tasks, sorted by name (empty before MirrorMaker first ran)."""
    units = []
    for key, value in latest_by_key(public_bootstrap, MirrorNames().connect_topics[2], timeout=timeout).items():
        parts = key.decode().split("-", 2)  # status-connector-<name>, status-task-<name>-<n>
        if len(parts) < 3 or parts[0] != "status" or parts[1] not in ("connector", "task") or value is None:
            continue  # topic-usage records, deleted connectors
        _, kind, name = parts
        status = json.loads(value)
        units.append(MirrorUnit(kind, name, status["state"], status.get("trace"), int(status.get("generation", 0))))
    newest: dict[str, int] = {}
    for u in units:
        if u.kind == "task":
            newest[u.connector] = max(newest.get(u.connector, 0), u.generation)
    current = (u for u in units if u.kind == "connector" or u.generation == newest[u.connector])
    return sorted(current, key=lambda u: (u.connector, u.kind, u.name))
