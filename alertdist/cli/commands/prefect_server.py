"""`alertdist prefect start|stop|status`: the local Prefect server and its UI."""

from __future__ import annotations

import argparse

from alertdist.cli import parsing
from alertdist.infra import prefect_local
from alertdist.settings import Settings


def local_server(settings: Settings) -> prefect_local.PrefectServer:
    return prefect_local.PrefectServer(home=settings.prefect_home, port=settings.prefect_port)


def _start(args, settings):
    server = local_server(settings)
    prefect_local.start(server)
    print(f"export PREFECT_API_URL={server.api_url}   # so `prefect` commands and flows use this server")


def _stop(args, settings):
    prefect_local.stop(local_server(settings))


def _status(args, settings):
    text = prefect_local.status(local_server(settings))
    print(text)
    return 0 if " up " in text else 3


def register(sub: argparse._SubParsersAction) -> None:
    parsing.actions(
        sub,
        "prefect",
        "start, stop or check the local Prefect server (SQLite) and its UI",
        [
            ("start", _start, "start the server in the background (reused when already up); prints the UI address"),
            ("stop", _stop, "stop the server this project started"),
            ("status", _status, "is the server answering? (exit 3 if not)"),
        ],
    )
