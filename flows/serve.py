"""The archive service, long-running: `alertdist serve` kept up (restarted if it dies) for ``hours``."""

from __future__ import annotations

from prefect import flow, get_run_logger

from alertdist.jobs.serve import Listener, keep_serving
from alertdist.settings import Settings


@flow(name="archive-service", flow_run_name="archive-service")
def serve_archive(
    archive: str | None = None, host: str = "127.0.0.1", port: int = 8300, workers: int = 2, hours: float | None = None
) -> int:
    """Serve the archive over HTTP (default: the settings' archive) until cancelled or for ``hours``."""
    logger = get_run_logger()
    listener = Listener(host, port, workers)
    return keep_serving(Settings.load(), listener, archive=archive, hours=hours, log=logger.info)
