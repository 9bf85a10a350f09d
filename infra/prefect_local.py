"""A local Prefect server (SQLite, the embedded default) run in the background, with its UI.

Like the Kafka nodes, it is started detached with a pid file, so the command that started it can return
while operators keep using the UI, and `stop` ends exactly what `start` began. Its API and UI ask for HTTP basic
auth by default (Prefect's ``server.api.auth_string``; ``auth=False`` turns it off, for a throwaway server): the
user ``admin`` and a password generated once into ``home/auth`` (0600); `client_env` hands it to the flows,
the workers and ``prefect deploy``. Without it anyone who reaches the port could register a deployment that the
process worker runs with the operator's environment. The server and the worker run with umask 077: the database,
logs and everything else under ``home`` are the owner's only.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alertdist.supervisor import Supervised, wait_ready

__all__ = [
    "PrefectInfraError",
    "PrefectServer",
    "Worker",
    "deploy_all",
    "start",
    "start_worker",
    "status",
    "stop",
    "stop_worker",
    "worker_status",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = "alertdist"  # the pool every deployment in prefect.yaml names


class PrefectInfraError(RuntimeError):
    """The local Prefect server could not be started or stopped; the message says what to do next."""


@dataclass(frozen=True)
class PrefectServer:
    home: Path  # PREFECT_HOME: the SQLite database and server settings live here
    port: int = 4200
    host: str = "127.0.0.1"
    auth: bool = True

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def process(self) -> Supervised:
        """The server's process; its API and services are its children, so a stop signals its whole session."""
        return Supervised("Prefect server", self.pid_file, ("prefect", "server"), session=True)

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def auth_file(self) -> Path:
        return self.home / "auth"

    def auth_string(self) -> str | None:
        """``admin:<password>`` for a server with ``auth``, generated on first use; None without auth."""
        if not self.auth:
            return None
        if not self.auth_file.is_file():
            _private_home(self.home)
            fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"admin:{secrets.token_urlsafe(18)}\n")
        return self.auth_file.read_text().strip()

    def client_env(self) -> dict[str, str]:
        """Environment for processes that talk to this server (flows, workers, `prefect deploy`)."""
        env = {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}
        if self.auth:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string()
        return env

    def server_env(self) -> dict[str, str]:
        """Environment of the server process itself."""
        env = {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.api_url,
        }
        if self.auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string()
        return env

    def authorization(self) -> dict[str, str]:
        """The HTTP header a request to this server's API needs (none without auth)."""
        if not self.auth:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.auth_string().encode()).decode()}


def _healthy(server: PrefectServer, timeout: float = 2.0) -> bool:
    """Whether the server answers, and answers us: with auth, an authorised request, not only the open health check."""
    path = "/flow_runs/count" if server.auth else "/health"
    request = urllib.request.Request(
        f"{server.api_url}{path}", headers=server.authorization(), method="POST" if server.auth else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _prefect_command() -> str:
    return str(Path(sys.executable).with_name("prefect"))


#: The umask of the server and the worker (and so of the flow runs it starts): what they create is private.
PRIVATE_UMASK = 0o077


def _private_home(home: Path) -> None:
    """``home`` (the database, logs, the credential) the owner's only."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)


def start(server: PrefectServer, *, timeout: float = 120.0, log=print) -> str:
    """Start the server unless it already answers; wait until /api/health is OK. Returns the UI address."""
    if _healthy(server):
        log(f"Prefect server already running at {server.ui_url}")
        return server.ui_url
    with socket.socket() as s:
        if s.connect_ex((server.host, server.port)) == 0:
            raise PrefectInfraError(
                f"port {server.port} is taken by something that is not a healthy Prefect server; "
                "stop it or set ALERTDIST_PREFECT_PORT"
            )
    _private_home(server.home)
    env = {**os.environ, **server.server_env()}
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another one
    cmd = [_prefect_command(), "server", "start", "--host", server.host, "--port", str(server.port)]
    proc = server.process.start(cmd, log_file=server.log_file, env=env, umask=PRIVATE_UMASK)
    log(f"Prefect server starting (pid {proc.pid}, log {server.log_file})")
    why = wait_ready(proc, lambda: _healthy(server), timeout=timeout, log_file=server.log_file)
    if why:
        raise PrefectInfraError(f"Prefect server {why}")
    log(f"Prefect UI at {server.ui_url}")
    return server.ui_url


def stop(server: PrefectServer, *, timeout: float = 30.0, log=print) -> None:
    server.process.stop(timeout=timeout, log=log)


def status(server: PrefectServer) -> str:
    pid = server.process.pid()
    if _healthy(server):
        return f"Prefect server up at {server.ui_url} (pid {pid or 'not ours'})"
    return f"Prefect server down{f' (pid {pid} not answering)' if pid else ''}"


def deploy_all(server: PrefectServer, *, repo: Path = PROJECT_ROOT, log=print) -> None:
    """Create the ``alertdist`` process work pool (or keep it) and every deployment of ``prefect.yaml``."""
    env = {**os.environ, **server.client_env()}
    steps = [
        (
            "creating work pool",
            [_prefect_command(), "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        ),
        ("prefect deploy --all", [_prefect_command(), "--no-prompt", "deploy", "--all"]),
    ]
    for what, cmd in steps:
        log(f"{what} on {server.api_url}...")
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise PrefectInfraError(
                f"{what} failed (exit {done.returncode}); is the server up (`alertdist prefect status`)?\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    log(f"deployments of {repo / 'prefect.yaml'} created on work pool {WORK_POOL!r}")


@dataclass(frozen=True)
class Worker:
    """A Prefect process worker on the ``alertdist`` pool: it starts each scheduled flow run as a process."""

    server: PrefectServer
    poll_seconds: float = 10.0  # how often it asks the server for runs that are due

    @property
    def pid_file(self) -> Path:
        return self.server.home / "worker.pid"

    @property
    def process(self) -> Supervised:
        """The worker's process; the flow runs it started are its children and are signalled too."""
        return Supervised("Prefect worker", self.pid_file, ("prefect", "worker"), session=True)

    @property
    def log_file(self) -> Path:
        return self.server.home / "worker.log"


def start_worker(worker: Worker, *, env: dict[str, str] | None = None, log=print) -> int:
    """Start the worker in the background unless one is already running; returns its pid.

    Flow runs inherit the worker's environment (``env``, default this process's), so the ``ALERTDIST_*``
    settings the worker starts with are the ones every scheduled run uses.
    """
    if worker.process.pid() is None and not _healthy(worker.server):
        raise PrefectInfraError(
            f"no Prefect server answers at {worker.server.api_url}: run `alertdist prefect start` first"
        )
    _private_home(worker.server.home)
    full_env = {
        **(os.environ if env is None else env),
        **worker.server.client_env(),
        "PREFECT_WORKER_QUERY_SECONDS": str(worker.poll_seconds),
    }
    cmd = [_prefect_command(), "worker", "start", "--pool", WORK_POOL, "--type", "process"]
    return worker.process.ensure(cmd, log_file=worker.log_file, env=full_env, umask=PRIVATE_UMASK, log=log)


def stop_worker(worker: Worker, *, timeout: float = 60.0, log=print) -> None:
    """Stop the worker; flow runs it started are its children and are signalled too (Prefect marks them)."""
    worker.process.stop(timeout=timeout, log=log)


def worker_status(worker: Worker) -> str:
    return worker.process.status(f" on pool {WORK_POOL!r}")
