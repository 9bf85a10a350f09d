"""`alertdist prefect start|stop|status|deploy` and `alertdist worker start|stop|status`: the local Prefect
server and its UI, the deployments of prefect.yaml, and the process worker that runs them on their schedules."""

from __future__ import annotations

import argparse

from alertdist.cli import parsing
from alertdist.infra import prefect_local
from alertdist.settings import Settings


def local_server(settings: Settings, *, secure: bool = False) -> prefect_local.PrefectServer:
    """The local Prefect server, behind basic auth; ``secure``: the secure deployment's own, on the next port."""
    if secure:
        return prefect_local.PrefectServer(
            home=settings.prefect_home / "secure", port=settings.prefect_port + 1, auth=True
        )
    return prefect_local.PrefectServer(home=settings.prefect_home, port=settings.prefect_port, auth=True)


def _start(args, settings):
    server = local_server(settings, secure=args.secure)
    prefect_local.start(server)
    print(f"export PREFECT_API_URL={server.api_url}   # so `prefect` commands and flows use this server")
    if server.auth:
        print(
            f'export PREFECT_API_AUTH_STRING="$(cat {server.auth_file})"   # its login (the UI asks for it: user admin)'
        )


def _stop(args, settings):
    prefect_local.stop(local_server(settings, secure=args.secure))


def _shown(text: str) -> int:
    """Print a service's status line; exit 3 when it is not up (what `make status` checks)."""
    print(text)
    return 0 if " up " in text else 3


def _status(args, settings):
    return _shown(prefect_local.status(local_server(settings, secure=args.secure)))


def _deploy(args, settings):
    prefect_local.deploy_all(local_server(settings))


def _worker(settings: Settings) -> prefect_local.Worker:
    return prefect_local.Worker(local_server(settings))


def _worker_start(args, settings):
    prefect_local.start_worker(_worker(settings))
    print(f"Scheduled runs now start on their own; watch them at {local_server(settings).ui_url}/runs")


def _worker_stop(args, settings):
    prefect_local.stop_worker(_worker(settings))


def _worker_status(args, settings):
    return _shown(prefect_local.worker_status(_worker(settings)))


#: Each command: its help, its actions (action, function, help) and its description.
_COMMANDS = {
    "prefect": (
        "start, stop or check the local Prefect server (SQLite) and its UI",
        [
            ("start", _start, "start the server in the background (reused when already up); prints the UI address"),
            ("stop", _stop, "stop the server this project started"),
            ("status", _status, "is the server answering? (exit 3 if not)"),
            ("deploy", _deploy, "create the 'alertdist' process work pool and every deployment in prefect.yaml"),
        ],
        None,
    ),
    "worker": (
        "start, stop or check the process worker that runs the deployments on their schedules",
        [
            ("start", _worker_start, "start the worker in the background on pool 'alertdist'"),
            ("stop", _worker_stop, "stop the worker (and the flow runs it started)"),
            ("status", _worker_status, "is the worker running? (exit 3 if not)"),
        ],
        "The worker runs each scheduled flow run as a process, with the ALERTDIST_* settings it was started with. "
        "Start it after `alertdist prefect deploy`.",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    parsers = {
        name: parsing.actions(sub, name, help, each, description=description)
        for name, (help, each, description) in _COMMANDS.items()
    }
    for name in ("start", "stop", "status"):
        parsing.action_parser(parsers["prefect"], name).add_argument(
            "--secure", action="store_true", help="the secure deployment's server (basic auth)"
        )
