"""What every command's parser shares: a sub-command whose description is its function's docstring, a night,
and a list of programme ids, refused with the form expected."""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
from collections.abc import Callable

from alertdist.nights.dates import parse_night

__all__ = ["action_parser", "actions", "archive_option", "command", "night", "programme_ids", "quiet_option"]


def command(
    sub: argparse._SubParsersAction, name: str, run: Callable, help: str, *, kafka: bool = False, **options
) -> argparse.ArgumentParser:
    """The sub-command ``name`` running ``run(args, settings)``; ``--help`` shows ``run``'s docstring.

    ``kafka``: the command cannot start without a broker, so it first checks that one is listening.
    """
    parser = sub.add_parser(name, help=help, description=inspect.cleandoc(run.__doc__ or help), **options)
    parser.set_defaults(run=run, needs_kafka=kafka)
    return parser


def actions(
    sub: argparse._SubParsersAction, name: str, help: str, each: list[tuple[str, Callable, str]], **options
) -> argparse.ArgumentParser:
    """A command made of actions (``start``, ``stop``, ``status``...): ``each`` is (action, function, help)."""
    parser = sub.add_parser(name, help=help, **options)
    chosen = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, run, action_help in each:
        chosen.add_parser(action, help=action_help).set_defaults(run=run)
    return parser


def action_parser(parser: argparse.ArgumentParser, action: str) -> argparse.ArgumentParser:
    """The parser of one action of a command made by `actions`, to give it options of its own."""
    chosen = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return chosen.choices[action]


def quiet_option(parser: argparse.ArgumentParser) -> None:
    """``--quiet``, on every command that runs long enough to show progress."""
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def archive_option(parser: argparse.ArgumentParser, help: str, *old: str, **options) -> None:
    """``--archive URL``: the one name for an archive location; ``old`` spellings still work, unlisted."""
    parser.add_argument("--archive", metavar="URL", help=help, **options)
    for spelling in old:
        parser.add_argument(spelling, dest="archive", metavar="URL", help=argparse.SUPPRESS)


def night(text: str) -> dt.date:
    try:
        return parse_night(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def programme_ids(text: str) -> list[int]:
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected programme ids like 1,2 (got {text!r})") from e
