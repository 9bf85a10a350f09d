"""MirrorMaker 2 from the producing cluster to the public one, long-running (the two-tier mode's mirror).

Starts MirrorMaker 2 in dedicated mode (every night's programme topics and the nights topic, names unchanged,
exactly once) and keeps it running, restarting it if it dies, until the run is cancelled.
"""

from __future__ import annotations

from prefect import flow

from alertdist.settings import Settings
from alertdist.tasks.mirror import keep_mirror_running


@flow(name="mirror", flow_run_name="mirror")
def run_mirror(
    bootstrap_servers: str | None = None,
    public_bootstrap_servers: str | None = None,
    check_every_s: float = 30.0,
    hours: float | None = None,
    survey: str | None = None,
) -> int:
    """Mirror ``bootstrap_servers`` (producing) to ``public_bootstrap_servers`` until cancelled (or ``hours``)."""
    settings = Settings.load(
        bootstrap_servers=bootstrap_servers, public_bootstrap_servers=public_bootstrap_servers, survey=survey
    )
    return keep_mirror_running(settings, check_every_s, hours)
