"""One supervisor for every background process the project starts: Kafka nodes, Prefect, Prometheus, MirrorMaker 2.

A process starts in a session of its own (it outlives the command that started it) and its pid goes into a 0600
pid file. A recorded pid counts as ours only while that process is alive (a zombie is not) and its command line
still carries the marks it was started with: pids get reused, and a stop must never signal a stranger. Stopping
sends SIGTERM (to the whole session when the process has children of its own), waits a grace period, then SIGKILL.

A leaf over `psutil`: production code (the mirror) and the development launchers (alertdist.infra) both use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Supervised", "alive", "stop_all", "wait_ready"]


def _quiet(_: str) -> None:
    pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead: it has exited, only its exit status is left)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


@dataclass(frozen=True)
class Supervised:
    """One background process: its name (for messages), its pid file, and the marks that prove a pid is still it.

    ``marks``: strings each found in some argument of its command line (a main class, a configuration path).
    ``session``: signal its whole session, for a server whose work runs in children it started.
    """

    name: str
    pid_file: Path
    marks: tuple[str, ...]
    session: bool = False

    def pid(self) -> int | None:
        """The recorded pid while that process is alive and is still ours; None otherwise."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._ours(pid) else None

    def _ours(self, pid: int) -> bool:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            arguments = process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False  # gone, or another user's: not a process this project started
        if not arguments:
            return True  # in the middle of exec: not readable yet, and not evidence of another program
        return all(any(mark in argument for argument in arguments) for mark in self.marks)

    def start(
        self,
        command: Sequence[str],
        *,
        log_file: Path,
        env: dict[str, str] | None = None,
        umask: int = -1,
    ) -> subprocess.Popen:
        """Start ``command`` detached, its output appended to ``log_file`` (0600), and record its pid."""
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            process = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # outlives the command that started it; ended by `stop`
                umask=umask,
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{process.pid}\n")
        return process

    def ensure(self, command: Sequence[str], *, log: Callable[[str], None] = _quiet, **how) -> int:
        """`start` ``command`` (``how``: its ``log_file``, ``env``, ``umask``) unless ours already runs, which is
        then reused; returns the pid."""
        running = self.pid()
        if running:
            log(f"{self.name} already running (pid {running}, log {how['log_file']})")
            return running
        process = self.start(command, **how)
        log(f"{self.name} started (pid {process.pid}, log {how['log_file']})")
        return process.pid

    def status(self, where: str = "") -> str:
        """``<name> up<where> (pid N)`` or ``<name> down``."""
        pid = self.pid()
        return f"{self.name} up{where} (pid {pid})" if pid else f"{self.name} down"

    def signal(self, pid: int, number: int) -> None:
        try:
            if self.session:
                os.killpg(pid, number)
            else:
                os.kill(pid, number)
        except ProcessLookupError:
            pass  # it exited in the meantime

    def stop(self, *, timeout: float = 30.0, kill: bool = False, log: Callable[[str], None] = _quiet) -> bool:
        """SIGTERM (``kill``: SIGKILL at once, for fault tests), SIGKILL after ``timeout``; False if not running."""
        return bool(stop_all([self], timeout=timeout, kill=kill, log=log))


def wait_ready(
    process: subprocess.Popen, ready: Callable[[], bool], *, timeout: float, log_file: Path, interval: float = 0.5
) -> str | None:
    """Wait until ``ready()`` after a `start`: None then, else why not, for the caller's error (it exited: the end
    of its log; or ``timeout`` passed: where its log is)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return None
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            return f"exited ({process.returncode}) while starting; its log ends:\n{tail}"
        time.sleep(interval)
    return f"was not ready within {timeout:.0f} s; see {log_file}"


def stop_all(
    processes: Iterable[Supervised],
    *,
    timeout: float = 30.0,
    kill: bool = False,
    log: Callable[[str], None] = _quiet,
) -> list[Supervised]:
    """Stop ``processes`` all at once (signal every one, then wait for all); returns those that were running.

    All at once, because stopping the nodes of a quorum one by one leaves the last unable to shut down cleanly.
    """
    running: dict[Supervised, psutil.Process] = {}
    for supervised in processes:
        pid = supervised.pid()
        if pid is None:
            log(f"{supervised.name} is not running (no live pid recorded)")
            supervised.pid_file.unlink(missing_ok=True)
            continue
        running[supervised] = psutil.Process(pid)
        supervised.signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
    _, hanging = psutil.wait_procs(list(running.values()), timeout=timeout)  # reaps those that are our children
    for supervised, process in running.items():
        if process in hanging:
            log(f"{supervised.name} (pid {process.pid}) did not stop within {timeout:.0f} s; killing it")
            supervised.signal(process.pid, signal.SIGKILL)
    psutil.wait_procs(hanging, timeout=timeout)
    for supervised in running:
        supervised.pid_file.unlink(missing_ok=True)
        log(f"{supervised.name} stopped")
    return list(running)
