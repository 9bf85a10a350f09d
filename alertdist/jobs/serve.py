"""The archive service and its indexes, from the one `Settings`: serve, manage tokens, backfill a night's index."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alertdist.archive import NightManifest
from alertdist.archive.index import backfill_index
from alertdist.nights.dates import format_night
from alertdist.service.app import ServiceConfig
from alertdist.service.rights import TokenStore
from alertdist.service.server import Listener, serve
from alertdist.settings import Settings

__all__ = ["Listener", "index_night", "keep_serving", "serve_archive", "service_config", "token_store", "tokens_path"]


def tokens_path(settings: Settings) -> Path:
    """Where the service's API tokens are kept (hashed, 0600)."""
    return settings.home / "service" / "tokens.json"


def token_store(settings: Settings) -> TokenStore:
    return TokenStore(tokens_path(settings))


def service_config(settings: Settings, archive: str | None = None) -> ServiceConfig:
    return ServiceConfig(
        archive_url=archive or settings.archive,
        tokens_path=str(tokens_path(settings)),
        storage_options=dict(settings.storage_options),
        survey=settings.survey,
        programmes=dict(settings.programmes),
    )


def serve_archive(settings: Settings, listener: Listener, *, archive: str | None = None, on_ready=None) -> None:
    """Serve the archive over HTTP until interrupted."""
    serve(service_config(settings, archive), listener, on_ready=on_ready)


def index_night(settings: Settings, night: dt.date, archive: str | None = None) -> NightManifest:
    """Write (or rewrite) a night's indexes from its tarballs; the manifest gets their checksums."""
    return backfill_index(archive or settings.archive, settings.survey, format_night(night), settings.storage_options)


def keep_serving(
    settings: Settings, listener: Listener, *, archive: str | None = None, hours: float | None = None, log=print
) -> int:
    """Run `alertdist serve` as a child process, restarted if it dies, for ``hours`` (None: until stopped).

    The child reads the same settings (this process's environment) and gets the rest as arguments."""
    import subprocess
    import sys
    import time

    host, port = listener.host, listener.port
    deadline = None if hours is None else time.monotonic() + hours * 3600
    command = [sys.executable, "-m", "alertdist.cli.main", "serve", "--host", host, "--port", str(port)]
    command += ["--workers", str(listener.workers), "--archive", archive or settings.archive]
    command += ["--access-log", listener.access_log] if listener.access_log else []
    starts = 0
    while deadline is None or time.monotonic() < deadline:
        starts += 1
        log(f"starting the archive service at http://{host}:{port}/ (start {starts})")
        child = subprocess.Popen(command)
        try:
            while child.poll() is None and (deadline is None or time.monotonic() < deadline):
                time.sleep(1.0)
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
        if child.returncode not in (0, None, -15):
            log(f"the archive service ended with code {child.returncode}; restarting in 5 s")
            time.sleep(5)
    return starts
