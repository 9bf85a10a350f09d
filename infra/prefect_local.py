"""A local Prefect server (SQLite, the embedded default) run in the background, with its UI.

Like the Kafka nodes, it is started detached with a pid file, so the command that started it can return
while operators keep using the UI, and `stop` ends exactly what `start` began. With ``auth=True`` (a secure
deployment) its API and UI ask for HTTP basic auth (Prefect's ``server.api.auth_string``): the user ``admin`` and a
password generated once into ``home/auth`` (0600); `client_env` hands it to the flows and workers.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrefectInfraError", "PrefectServer", "start", "status", "stop"]


class PrefectInfraError(RuntimeError):
    """The local Prefect server could not be started or stopped; the message says what to do next."""


@dataclass(frozen=True)
class PrefectServer:
    home: Path  # PREFECT_HOME: the SQLite database and server settings live here
    port: int = 4200
    host: str = "127.0.0.1"
    auth: bool = False

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
            self.home.mkdir(parents=True, exist_ok=True)
            self.auth_file.touch(mode=0o600)
            self.auth_file.write_text(f"admin:{secrets.token_urlsafe(18)}\n")
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


def _pid(server: PrefectServer) -> int | None:
    try:
        pid = int(server.pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


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
    server.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server.server_env()}
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another one
    prefect = Path(sys.executable).with_name("prefect")
    with open(server.log_file, "ab") as out:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", server.host, "--port", str(server.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server.pid_file.write_text(f"{proc.pid}\n")
    log(f"Prefect server starting (pid {proc.pid}, log {server.log_file})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _healthy(server):
            log(f"Prefect UI at {server.ui_url}")
            return server.ui_url
        if proc.poll() is not None:
            tail = server.log_file.read_text(errors="replace")[-3000:]
            raise PrefectInfraError(f"Prefect server exited while starting; its log ends:\n{tail}")
        time.sleep(0.5)
    raise PrefectInfraError(f"Prefect server did not answer within {timeout:.0f} s; see {server.log_file}")


def stop(server: PrefectServer, *, timeout: float = 30.0, log=print) -> None:
    pid = _pid(server)
    if pid is None:
        log("Prefect server is not running (no live pid recorded)")
        server.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)  # the server runs its API and services as children of its session
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(server):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _pid(server):
        os.killpg(pid, signal.SIGKILL)
    server.pid_file.unlink(missing_ok=True)
    log("Prefect server stopped")


def status(server: PrefectServer) -> str:
    pid = _pid(server)
    if _healthy(server):
        return f"Prefect server up at {server.ui_url} (pid {pid or 'not ours'})"
    return f"Prefect server down{f' (pid {pid} not answering)' if pid else ''}"
