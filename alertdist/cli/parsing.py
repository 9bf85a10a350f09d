"""What every command's parser shares: a sub-command whose description is its function's docstring, a night,
and a list of programme ids, refused with the form expected."""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
from collections.abc import Callable

from alertdist.nights.dates import parse_night

__all__ = ["command", "night", "programme_ids"]


def command(sub: argparse._SubParsersAction, name: str, run: Callable, help: str, **options) -> argparse.ArgumentParser:
    """The sub-command ``name`` running ``run(args, settings)``; ``--help`` shows ``run``'s docstring."""
    parser = sub.add_parser(name, help=help, description=inspect.cleandoc(run.__doc__ or help), **options)
    parser.set_defaults(run=run)
    return parser


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
