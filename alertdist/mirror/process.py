"""The MirrorMaker 2 process: ``java -cp <libs>/* org.apache.kafka.connect.mirror.MirrorMaker <properties>``.

Started in its own session (it outlives the command that started it), its pid recorded beside its log; `stop`
sends SIGTERM (Connect stops its tasks and commits what they wrote) and SIGKILL only if it hangs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from alertdist.infra import jmx_exporter
from alertdist.infra.kafka_local import java_command, process_alive
from alertdist.mirror.config import MirrorSpec, mirror_properties, mirror_secrets, write_properties

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


def _pid(home: MirrorHome) -> int | None:
    """The recorded pid while that process is alive and is still our MirrorMaker (pids get reused)."""
    try:
        pid = int(home.path("pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) and MAIN_CLASS.encode() in cmdline else None


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
    pid, port = _pid(home), _rest_port(home)
    return MirrorStatus(pid, port, pid is not None and _answering(port))


def start(home: MirrorHome, spec: MirrorSpec, *, timeout: float = 90.0) -> MirrorStatus:
    """Write the properties for ``spec`` and start MirrorMaker 2 (reused when already running); returns once its
    internal REST listener answers."""
    if _pid(home) is not None:
        return status(home)
    secrets = mirror_secrets(spec)
    if secrets:
        write_properties(home.path("secrets"), secrets, mode=0o600)
    write_properties(home.path("properties"), mirror_properties(spec, home.path("secrets")))
    agent = jmx_exporter.agent_option(home.libs, home.jmx_port) if home.jmx_port else []
    command = [*java_command(home.libs, home.heap), *agent, MAIN_CLASS, str(home.path("properties"))]
    with open(home.path("log"), "ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    home.path("pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MirrorError(
                f"MirrorMaker 2 exited ({proc.returncode}) while starting; its log ends:\n"
                f"{home.path('log').read_text(errors='replace')[-3000:]}"
            )
        if _answering(spec.rest_port):
            return status(home)
        time.sleep(0.5)
    raise MirrorError(f"MirrorMaker 2 did not open its REST listener within {timeout:.0f} s; see {home.path('log')}")


def stop(home: MirrorHome, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop MirrorMaker 2 (``kill``: SIGKILL at once, for fault tests); False when it was not running."""
    pid = _pid(home)
    if pid is None:
        home.path("pid").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        _reap(pid)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    home.path("pid").unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
