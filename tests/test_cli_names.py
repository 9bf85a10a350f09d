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
