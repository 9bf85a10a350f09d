"""`alertdist mirror start|stop|status`: MirrorMaker 2 from the producing cluster to the public one."""

from __future__ import annotations

import argparse

from alertdist.cli import parsing
from alertdist.jobs import mirror
from alertdist.mirror import process


def _start(args, settings):
    status = mirror.start_mirror(settings)
    home = mirror.mirror_home(settings)
    print(f"{status}\n{settings.bootstrap_servers} -> {settings.public_bootstrap_servers}; log {home.path('log')}")


def _stop(args, settings):
    print("MirrorMaker 2 stopped" if process.stop(mirror.mirror_home(settings)) else "MirrorMaker 2 was not running")


def _status(args, settings):
    status = process.status(mirror.mirror_home(settings))
    print(status)
    if not status.running:
        return 3
    units = mirror.mirror_units_now(settings)
    for unit in units:
        print(f"  {unit}")
    failed = [u for u in units if u.failed]
    if failed:
        print(f"{len(failed)} failed: the full trace is in {mirror.mirror_home(settings).path('log')}; restart it")
    return 0 if status.answering and not failed else 3


DESCRIPTION = """\
MirrorMaker 2 in dedicated mode copies every night's programme topics and the nights topic from
$ALERTDIST_BOOTSTRAP_SERVERS (the producing cluster) to $ALERTDIST_PUBLIC_BOOTSTRAP_SERVERS (default: the local
public cluster, `alertdist kafka start --public`), names unchanged, exactly once. Its files: .alertdist/mirror/.
"""


def register(sub: argparse._SubParsersAction) -> None:
    what = "MirrorMaker 2 (producing cluster -> public cluster, the two-tier mode)"
    each = [
        ("start", _start, "write the properties file and start MirrorMaker 2 (reused when already running)"),
        ("stop", _stop, "stop it (SIGTERM: its tasks commit what they wrote)"),
        ("status", _status, "its pid, its REST listener, each connector's and task's state (exit 3: down or failed)"),
    ]
    parsing.actions(sub, "mirror", f"start, stop or check {what}", each, description=DESCRIPTION)
