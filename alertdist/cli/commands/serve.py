"""`alertdist serve`: the archive over HTTP; `alertdist serve token add|revoke|list`: who may read what."""

from __future__ import annotations

import argparse
import sys

from alertdist.cli import parsing
from alertdist.settings import Settings

__all__ = ["index_command", "register"]

DESCRIPTION = """\
Serve the archive (a folder or s3://bucket/prefix) read-only over HTTP. The OpenAPI description is at /docs.

  GET /alerts/{candid}                    the packet as distributed (application/avro); ?format=json
  GET /alerts/{candid}/cutouts/{science|template|difference}.{png|fits}
  GET /alerts/{candid}/page               an HTML page: cutouts, light curve, main fields
  GET /objects/{objectId}                 every archived alert of an object (?format=json|arrow|parquet)
  GET /objects/{objectId}/lightcurve.png  and /objects/{objectId}/page
  GET /alerts?ra=&dec=&radius=&since=&until=   cone (degrees) and time (jd) search
  GET /nights, /nights/{YYYYMMDD}, /schemas/{version}, /health, /metrics
  GET /files/...                          the archive's files (HTTP ranges) and listings: `alertdist download
                                          http://HOST:PORT/files/ --night N` works against it

Programme 1 is public; 2 and 3 need a token (`Authorization: Bearer <token>`) from `alertdist serve token add`.
Several replicas may serve one archive: each is stateless.
"""


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from alertdist.jobs.serve import Listener, serve_archive

    def ready(host: str, port: int) -> None:
        print(f"serving {args.archive or settings.archive} at http://{host}:{port}/ (API docs at /docs)", flush=True)

    listener = Listener(args.host, args.port, args.workers, args.access_log)
    serve_archive(settings, listener, archive=args.archive, on_ready=ready)
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from alertdist.jobs.serve import token_store

    store = token_store(settings)
    if args.token_action == "add":
        token = store.add(args.name, args.role, args.tier)
        print(f"token for {args.name} (role {args.role}, tier {args.tier}); shown once, keep it safe:", file=sys.stderr)
        print(token)
    elif args.token_action == "revoke":
        store.revoke(args.name)
        print(f"revoked the token of {args.name}")
    else:
        for entry in store.list():
            state = "revoked" if entry["revoked"] else "live"
            print(f"{entry['name']:20} {entry['role']:12} {entry['tier']:10} {entry['created']}  {state}")
    return 0


def index_command(args: argparse.Namespace, settings: Settings) -> int:
    """`alertdist archive index --night N`: (re)write a night's indexes from its tarballs."""
    from alertdist.jobs.serve import index_night

    manifest = index_night(settings, args.night, args.archive)
    for archive in manifest.programmes.values():
        print(f"{archive.index['path']}  {archive.index['size']:>10,} bytes  ({archive.counts['written']} alerts)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    help = "serve the archive over HTTP (alerts, objects, cutouts, searches, files)"
    p = parsing.command(sub, "serve", _serve, help, description=DESCRIPTION)
    parsing.archive_option(p, "archive root: a folder or s3://bucket/prefix (default $ALERTDIST_ARCHIVE_URL)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8300, help="port (default 8300)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--access-log", metavar="FILE", help="access log file (default: standard error)")
    actions = p.add_subparsers(dest="serve_action", metavar="ACTION")
    token = actions.add_parser("token", help="issue, revoke or list API tokens")
    token_actions = token.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    add = token_actions.add_parser("add", help="issue a token (printed once; only its hash is kept)")
    add.add_argument("name", help="who the token is for")
    add.add_argument("--role", required=True, choices=["public", "partnership", "caltech"], help="programmes it reads")
    add.add_argument("--tier", default="standard", choices=["anonymous", "standard", "bulk"], help="rate limit tier")
    revoke = token_actions.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    token_actions.add_parser("list", help="the tokens issued (names, roles, tiers, states)")
    token.set_defaults(run=_token)
