"""Run the service with uvicorn: one process, or several workers sharing one listening socket.

The configuration reaches each worker as an argument (a picklable `ServiceConfig` inside a factory), never
through the environment. Access lines go to standard error (or a file), one per request, without tokens.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alertdist.service.app import ACCESS_LOG, ServiceConfig, create_app

__all__ = ["Listener", "serve", "serving_in_thread"]


@dataclass(frozen=True)
class Listener:
    """Where and how the service listens: address, port, worker processes, access log (None: standard error)."""

    host: str = "127.0.0.1"
    port: int = 8300
    workers: int = 1
    access_log: str | None = None


def _logging(access_log: str | None) -> None:
    if access_log:
        Path(access_log).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(access_log) if access_log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    ACCESS_LOG.handlers[:] = [handler]
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False


def _app(config: ServiceConfig, access_log: str | None):
    _logging(access_log)
    return create_app(config)


def serve(config: ServiceConfig, listener: Listener | None = None, *, on_ready=None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM end it cleanly); ``on_ready(host, port)`` once it listens."""
    import uvicorn

    listener = listener or Listener()
    host, port = listener.host, listener.port
    factory = functools.partial(_app, config, listener.access_log)
    settings = uvicorn.Config(
        factory, factory=True, host=host, port=port, workers=listener.workers, access_log=False, log_level="warning"
    )
    server = uvicorn.Server(settings)
    if listener.workers <= 1:
        if on_ready:
            on_ready(host, port)
        server.run()
        return
    from uvicorn.supervisors import Multiprocess

    sock = settings.bind_socket()
    if on_ready:
        on_ready(host, sock.getsockname()[1])
    try:  # uvicorn >= 0.35 starts each worker's server itself; older ones take the target
        supervisor = Multiprocess(settings, sockets=[sock])
    except TypeError:
        supervisor = Multiprocess(settings, target=server.run, sockets=[sock])
    supervisor.run()


@contextlib.contextmanager
def serving_in_thread(config: ServiceConfig, host: str = "127.0.0.1", port: int | None = None):
    """Yield (base URL, app) of the service running in a thread of this process (tests, benchmarks, notebooks).

    Without ``port``, the socket is bound here to a port the system picks, so no other process can take it first."""
    import uvicorn

    app = create_app(config)
    sock = socket.socket()
    sock.bind((host, port or 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="alertdist-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the service did not start on {host}:{port} within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/", app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
