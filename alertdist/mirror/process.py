"""The MirrorMaker 2 process: ``java -cp <libs>/* org.apache.kafka.connect.mirror.MirrorMaker <properties>``.

Started in its own session (it outlives the command that started it), its pid recorded beside its log; `stop`
sends SIGTERM (Connect stops its tasks and commits what they wrote) and SIGKILL only if it hangs.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from alertdist.jvm import agent_option, java_command
from alertdist.mirror.config import MirrorSpec, mirror_properties, mirror_secrets, write_properties
from alertdist.supervisor import Supervised, wait_ready

__all__ = ["MAIN_CLASS", "MirrorError", "MirrorHome", "MirrorStatus", "start", "status", "stop"]

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"


class MirrorError(RuntimeError):
    """MirrorMaker 2 could not be started or stopped; the message says where its log is."""


@dataclass(frozen=True)
class MirrorHome:
    """Where one MirrorMaker 2 keeps its properties, pid and log, and which jars it runs."""

    folder: Path
    libs: Path
    heap: str = "1g"
    jmx_port: int | None = None  # the JMX exporter agent's port (None: no agent)

    def path(self, what: str) -> Path:
        """Its ``properties``, ``secrets`` (0600: the passwords the properties name), ``pid`` or ``log`` file."""
        return self.folder / f"mm2.{what}"

    @property
    def process(self) -> Supervised:
        """Its process: a pid counts as it while it runs MirrorMaker on these properties (pids get reused)."""
        return Supervised("MirrorMaker 2", self.path("pid"), (MAIN_CLASS, str(self.path("properties"))))


@dataclass(frozen=True)
class MirrorStatus:
    pid: int | None
    rest_port: int | None
    answering: bool

    @property
    def running(self) -> bool:
        return self.pid is not None

    def __str__(self) -> str:
        state = "up" if self.answering else ("starting or stuck" if self.running else "down")
        return f"MirrorMaker 2: {state} (pid {self.pid or '-'}, internal REST 127.0.0.1:{self.rest_port or '-'})"


def _rest_port(home: MirrorHome) -> int | None:
    try:
        line = next(x for x in home.path("properties").read_text().splitlines() if x.startswith("listeners="))
    except (OSError, StopIteration):
        return None
    return int(line.rsplit(":", 1)[1])


def _answering(port: int | None) -> bool:
    if port is None:
        return False
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def status(home: MirrorHome) -> MirrorStatus:
    pid, port = home.process.pid(), _rest_port(home)
    return MirrorStatus(pid, port, pid is not None and _answering(port))


def start(home: MirrorHome, spec: MirrorSpec, *, timeout: float = 90.0) -> MirrorStatus:
    """Write the properties for ``spec`` and start MirrorMaker 2 (reused when already running); returns once its
    internal REST listener answers."""
    if home.process.pid() is not None:
        return status(home)
    secrets = mirror_secrets(spec)
    if secrets:
        write_properties(home.path("secrets"), secrets, mode=0o600)
    write_properties(home.path("properties"), mirror_properties(spec, home.path("secrets")))
    agent = agent_option(home.libs, home.jmx_port) if home.jmx_port else []
    command = [*java_command(home.libs, home.heap), *agent, MAIN_CLASS, str(home.path("properties"))]
    proc = home.process.start(command, log_file=home.path("log"))
    why = wait_ready(proc, lambda: _answering(spec.rest_port), timeout=timeout, log_file=home.path("log"))
    if why:
        raise MirrorError(f"MirrorMaker 2 {why}")
    return status(home)


def stop(home: MirrorHome, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop MirrorMaker 2 (``kill``: SIGKILL at once, for fault tests); False when it was not running."""
    return home.process.stop(timeout=timeout, kill=kill)
