"""Each long-running stage serves its metrics (`alertdist.metrics.exposition`) where the settings say: the port
``metrics_port`` (0 a free one, -1 none) announced in the project's Prometheus targets folder."""

from __future__ import annotations

import logging

from alertdist.metrics import catalog
from alertdist.metrics.exposition import Exposition, expose
from alertdist.settings import Settings

__all__ = ["serve_metrics", "targets_dir"]

_log = logging.getLogger("alertdist.metrics")


def targets_dir(settings: Settings):
    """Where processes announce their metrics address: watched by `alertdist prometheus start`'s server."""
    return settings.prometheus_home / "targets"


def serve_metrics(settings: Settings, job: str) -> Exposition | None:
    """Serve this process's metrics as ``job`` (publisher, filter, archiver, replay, monitor, night); None when
    ``metrics_port`` is -1. Once per process: later calls return the first exposition. With ``metrics`` off
    (``ALERTDIST_METRICS=0``, benchmarks only) the stage's hooks count nothing and nothing is served."""
    catalog.set_enabled(settings.metrics)
    if settings.metrics_port < 0 or not settings.metrics:
        return None
    try:
        return expose(job, targets_dir(settings), port=settings.metrics_port)
    except OSError as e:  # a fixed port already taken: the stage runs on, unmeasured, and says so
        _log.warning(
            "%s: cannot serve metrics on port %d (%s); set ALERTDIST_METRICS_PORT=0 for a free port",
            job,
            settings.metrics_port,
            e,
        )
        return None
