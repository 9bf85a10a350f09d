"""One name per concept in the `alertdist` command (issue 13): the archive location is `--archive URL` wherever a
command takes one (old spellings still parse, unlisted), and every long-running command takes `--quiet`."""

from __future__ import annotations

import pytest

from alertdist.cli.main import build_parser

LONG_RUNNING = [
    ["publish", "--simulate", "1"],
    ["simulate", "1", "--to", "x"],
    ["filter", "run", "f"],
    ["filter", "batch", "f", "x.tar.gz"],
    ["archive", "--night", "20231012"],
    ["download", "20231012", "--archive", "u", "--to", "d"],
    ["replay", "x.tar.gz", "--topic", "t"],
]


@pytest.mark.parametrize("args", LONG_RUNNING, ids=lambda a: " ".join(a[:2]))
def test_every_long_running_command_takes_quiet(args):
    assert build_parser().parse_args([*args, "--quiet"]).quiet is True


@pytest.mark.parametrize(
    "args, old",
    [
        (["archive", "--night", "20231012"], "--dest"),
        (["download", "20231012", "--to", "d"], "--from"),
        (["night"], None),
    ],
)
def test_the_archive_location_is_archive_everywhere_and_old_spellings_still_parse(args, old, capsys):
    parser = build_parser()
    assert parser.parse_args([*args, "--archive", "s3://b/a"]).archive == "s3://b/a"
    if old:
        assert parser.parse_args([*args, old, "s3://b/a"]).archive == "s3://b/a"
        with pytest.raises(SystemExit):
            parser.parse_args([*args, "--help"])
        shown = capsys.readouterr().out
        assert "--archive URL" in shown and old not in shown


# ------------------------------------------------------------------ one vocabulary (issue 25): the README's table

import argparse  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from alertdist.cli.parsing import VOCABULARY  # noqa: E402

CONCEPT_WORDS = re.compile(r"night|archive|programm|programid|parquet|tarball|format|what")
NOT_A_CONCEPT = {
    "--any-night": "a switch: accept alerts of another night",
    "--tarball": "a kind of source, as --folder",
}


def _every_parser(parser: argparse.ArgumentParser, path: str = "alertdist"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _every_parser(child, f"{path} {name}")


def test_every_commands_options_follow_the_one_vocabulary():
    """An option about a night, an archive, its format or programmes is the table's one name; old names hidden."""
    canonical = {t.option for t in VOCABULARY.values()}
    old = {spelling: t.option for t in VOCABULARY.values() for spelling in t.old}
    wrong = []
    for path, parser in _every_parser(build_parser()):
        for action in parser._actions:
            shown = action.help != argparse.SUPPRESS
            for option in action.option_strings:
                if option in old and shown:
                    wrong.append(f"{path} {option}: say {old[option]} (keep {option} hidden)")
                elif shown and CONCEPT_WORDS.search(option) and option not in canonical | NOT_A_CONCEPT.keys():
                    wrong.append(f"{path} {option}: not in the vocabulary ({', '.join(sorted(canonical))})")
    assert wrong == []


def test_the_readme_shows_the_vocabulary_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\|", "|")  # table escapes
    for term in VOCABULARY.values():
        assert re.search(rf"^\| `{term.option} {re.escape(term.metavar)}` \|", readme, re.M), term.option


@pytest.mark.parametrize(
    "new, old, dest, value",
    [
        (
            "filter batch f --archived-nights 20231010..20231012",
            "filter batch f --nights 20231010..20231012",
            "nights",
            ["20231010..20231012"],
        ),
        ("filter run f --programids 1,2", "filter run f --programmes 1,2", "programmes", [1, 2]),
        ("archive --night 20231012 --programids 3", "archive --night 20231012 --programmes 3", "programmes", [3]),
        ("replay x --topic t --format parquet", "replay x --topic t --from-parquet", "from_parquet", True),
        ("filter batch f x --format parquet", "filter batch f x --from-parquet", "from_parquet", True),
        (
            "download --archived-night 20231012 --to d --format parquet",
            "download 20231012 --to d --what parquet",
            "what",
            ("parquet",),
        ),
        ("archive-list --archive s3://b/a", "archive-list s3://b/a", "archive", "s3://b/a"),
    ],
)
def test_new_names_and_old_spellings_parse_alike(new, old, dest, value):
    parser = build_parser()
    assert getattr(parser.parse_args(new.split()), dest) == value
    parsed = parser.parse_args(old.split())
    assert (parsed.url if dest == "archive" else getattr(parsed, dest)) == value
