"""The `alertdist` command: one entry point, one sub-command module per concern (alertdist/cli/commands/)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from alertdist import __version__
from alertdist.kafka.errors import is_unreachable
from alertdist.kafka.reachable import any_broker_listening
from alertdist.runtime import slow_mimalloc_purge
from alertdist.settings import Settings

#: Sub-command modules, each with `register(subparsers)`; listed in the order `--help` shows them.
COMMAND_MODULES = [
    "alertdist.cli.commands.kafka",
    "alertdist.cli.commands.mirror",
    "alertdist.cli.commands.prefect_server",
    "alertdist.cli.commands.night",
    "alertdist.cli.commands.publish",
    "alertdist.cli.commands.filters",
    "alertdist.cli.commands.archive",
    "alertdist.cli.commands.replay",
    "alertdist.cli.commands.serve",
    "alertdist.cli.commands.users",
    "alertdist.cli.commands.clean",
    "alertdist.cli.commands.metrics",
]

DESCRIPTION = """\
Alert distribution for time-domain astronomy: ZTF alert packets published through Apache Kafka,
filtered by Python plug-ins, and archived each night to Avro tarballs and Parquet.

Every command reads its defaults from ALERTDIST_* environment variables (see README); without them it
uses the local Kafka broker on 127.0.0.1:9092 and the state folder .alertdist/ in the project.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertdist", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"alertdist {__version__}")
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka to talk to (default: the local broker, or $ALERTDIST_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the INFO logs of the libraries underneath (Dask, Prefect...)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


#: Libraries whose INFO logs are their own business (a local Dask cluster prints ~30 lines starting and stopping).
THIRD_PARTY_LOGGERS = ("distributed", "dask", "bokeh", "tornado")


def quiet_third_party() -> None:
    """Keep the libraries' INFO logs out of the terminal: their warnings and errors still show. Dask's worker
    processes read their log levels from the environment they inherit."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _no_broker(settings: Settings) -> str:
    return (
        f"no Kafka broker answers at {settings.bootstrap_servers}. Start the local one with "
        "`alertdist kafka start`, or point ALERTDIST_BOOTSTRAP_SERVERS (or --bootstrap-servers) at a running cluster"
    )


def main(argv: list[str] | None = None) -> int:
    slow_mimalloc_purge()  # before the sub-commands load pyarrow: see alertdist/runtime.py
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_third_party()
    settings = None
    try:
        settings = Settings.load(bootstrap_servers=args.bootstrap_servers)
        settings.private_home()  # everything the commands keep under it is private (issue 23)
        if getattr(args, "needs_kafka", False) and not any_broker_listening(settings.bootstrap_servers):
            raise ConnectionError(_no_broker(settings))
        return int(args.run(args, settings) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last line of defence: a clear one-line error, not a traceback
        if getattr(args, "debug", False) or os.environ.get("ALERTDIST_DEBUG"):
            raise
        if settings is not None and is_unreachable(e):
            e = _no_broker(settings)
        print(f"alertdist {args.command}: error: {e}", file=sys.stderr)
        print("(set ALERTDIST_DEBUG=1 to see the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
