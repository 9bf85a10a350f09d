"""`alertdist prefect start|stop|status`: the local Prefect server and its UI."""

from __future__ import annotations

import argparse

from alertdist.infra import prefect_local
from alertdist.settings import Settings


def local_server(settings: Settings, *, secure: bool = False) -> prefect_local.PrefectServer:
    """The local Prefect server; ``secure``: the secure deployment's own, behind basic auth, on the next port."""
    if secure:
        return prefect_local.PrefectServer(
            home=settings.prefect_home / "secure", port=settings.prefect_port + 1, auth=True
        )
    return prefect_local.PrefectServer(home=settings.prefect_home, port=settings.prefect_port)


def _start(args, settings):
    server = local_server(settings, secure=args.secure)
    prefect_local.start(server)
    print(f"export PREFECT_API_URL={server.api_url}   # so `prefect` commands and flows use this server")
    if server.auth:
        print(f"# and PREFECT_API_AUTH_STRING from {server.auth_file} (the UI asks for it: user admin)")


def _stop(args, settings):
    prefect_local.stop(local_server(settings, secure=args.secure))


def _status(args, settings):
    text = prefect_local.status(local_server(settings, secure=args.secure))
    print(text)
    return 0 if " up " in text else 3


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("prefect", help="start, stop or check the local Prefect server (SQLite) and its UI")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, help_ in [
        ("start", _start, "start the server in the background (reused when already up); prints the UI address"),
        ("stop", _stop, "stop the server this project started"),
        ("status", _status, "is the server answering? (exit 3 if not)"),
    ]:
        action = actions.add_parser(name, help=help_)
        action.add_argument("--secure", action="store_true", help="the secure deployment's server (basic auth)")
        action.set_defaults(run=func)
