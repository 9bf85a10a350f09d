"""What every command's parser shares: a sub-command whose description is its function's docstring, a night,
and a list of programme ids, refused with the form expected; and the one vocabulary of the command line.

`VOCABULARY` is the one table of option names (README, "One vocabulary"): each concept has one option, and the
spellings it replaced still parse for a release, hidden from --help. Commands add these options through
`term_option` (and `archive_option`, `format_option`), never by spelling them out."""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from alertdist.nights.dates import parse_night

__all__ = [
    "VOCABULARY",
    "Term",
    "action_parser",
    "actions",
    "archive_option",
    "command",
    "format_option",
    "night",
    "programme_ids",
    "quiet_option",
    "term_option",
]


@dataclass(frozen=True)
class Term:
    """One concept of the command line: its option, the metavar it shows, what it means, the old spellings."""

    option: str
    metavar: str
    meaning: str
    old: tuple[str, ...] = ()


VOCABULARY: dict[str, Term] = {
    "night": Term("--night", "YYYYMMDD", "the night in Kafka a command publishes, filters, archives or replays into"),
    "archived night": Term("--archived-night", "YYYYMMDD", "the night a command reads from an archive"),
    "archived nights": Term(
        "--archived-nights", "NIGHTS", "several archived nights: YYYYMMDD, FIRST..LAST or comma lists", ("--nights",)
    ),
    "archive": Term(
        "--archive", "URL", "the archive location: a folder, s3://bucket/prefix or http(s)://", ("--from", "--dest")
    ),
    "format": Term(
        "--format", "tarball|parquet", "which of the archive's formats to read or fetch", ("--what", "--from-parquet")
    ),
    "programmes": Term(
        "--programids", "1,2", "programme ids (ZTF's programid: 1 public, 2 partnership, 3 Caltech)", ("--programmes",)
    ),
}


def term_option(parser, concept: str, help: str, **options) -> argparse.Action:
    """The option of `concept` (a `VOCABULARY` key) with ``help``; its old spellings parse too, unlisted."""
    term = VOCABULARY[concept]
    options.setdefault("metavar", term.metavar)
    action = parser.add_argument(term.option, help=help, **options)
    hidden = {k: v for k, v in options.items() if k not in ("required", "dest")}
    for spelling in term.old:
        parser.add_argument(spelling, dest=action.dest, help=argparse.SUPPRESS, **hidden)
    return action


def command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable,
    help: str,
    *,
    kafka: bool = False,
    description: str | None = None,
    **options,
) -> argparse.ArgumentParser:
    """The sub-command ``name`` running ``run(args, settings)``; ``--help`` shows ``run``'s docstring, or
    ``description`` as written (its line breaks kept).

    ``kafka``: the command cannot start without a broker, so it first checks that one is listening.
    """
    if description is not None:
        options.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    description = description or inspect.cleandoc(run.__doc__ or help)
    parser = sub.add_parser(name, help=help, description=description, **options)
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


def _kinds() -> tuple[str, ...]:
    from alertdist.access.download import KINDS  # the archive's formats: one list, the downloader's

    return tuple(KINDS)


def _one_format(text: str) -> bool:
    """`--format tarball|parquet` of a reader, as the ``from_parquet`` flag its command reads."""
    if text not in _kinds():
        raise argparse.ArgumentTypeError(f"--format takes tarball or parquet (got {text!r})")
    return text == "parquet"


def _formats(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not kinds or any(k not in _kinds() for k in kinds):
        raise argparse.ArgumentTypeError(f"--format takes tarball and/or parquet, comma-separated (got {text!r})")
    return kinds


def format_option(parser: argparse.ArgumentParser, help: str, *, several: bool = False) -> None:
    """``--format``: ``tarball|parquet`` into ``args.from_parquet`` (readers), or with ``several`` a comma list
    into ``args.what`` (downloads, default both). The old ``--from-parquet`` flag and ``--what`` list still parse."""
    if several:
        parser.add_argument(
            "--format", dest="what", type=_formats, default=("tarball", "parquet"), metavar="tarball,parquet", help=help
        )
        parser.add_argument("--what", dest="what", type=_formats, help=argparse.SUPPRESS)
    else:
        parser.add_argument(
            "--format", dest="from_parquet", type=_one_format, default=False, metavar="tarball|parquet", help=help
        )
        parser.add_argument("--from-parquet", dest="from_parquet", action="store_true", help=argparse.SUPPRESS)


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
