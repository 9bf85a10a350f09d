"""The archive service for tests: a real uvicorn server on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx

from alertdist.infra import kafka_local
from alertdist.service.app import ServiceConfig, create_app

__all__ = ["running_service"]


@contextmanager
def running_service(config: ServiceConfig):
    """Yield (base URL, app) of the service over ``config`` while it runs; stopped on exit."""
    import uvicorn

    app = create_app(config)
    port = kafka_local.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="service", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start within 30 s")
        time.sleep(0.05)
    try:
        assert httpx.get(f"{base}health").status_code == 200
        yield base, app
    finally:
        server.should_exit = True
        thread.join(10)
