"""Quiet, truthful output (issue 25): tables that fit the page, progress that ends at 100 %."""

from __future__ import annotations

from alertdist.nights.report import MEASURE, by_measure, summary_rows


def test_the_night_summary_has_a_row_per_filter_so_it_stays_narrow_whatever_their_number():
    filters = {
        name: [{"by_programme": {"1": {"passed": 4, "errors": 0}, "2": {"passed": 1, "errors": 2}}}]
        for name in ("bright_transients", "solar_system", "variable_stars", "a_fourth_filter_with_a_long_name")
    }
    archived = {1: {"written": 10, "duplicates": 1}, 2: {"written": 5}}
    rows = summary_rows(
        {"delivered": {"1": 10, "2": 5}, "rejected": {"bad": 2}}, filters, archived, {1: "public", 2: "p"}
    )
    table = by_measure(rows)
    assert list(table[0]) == [MEASURE, "1 public", "2 p", "rejected (all)"]  # the columns do not grow with filters
    by_name = {row[MEASURE]: row for row in table}
    assert by_name["published"] == {MEASURE: "published", "1 public": 10, "2 p": 5, "rejected (all)": 2}
    assert by_name["variable_stars passed / errors"]["2 p"] == "1 / 2"
    assert by_name["archived"]["rejected (all)"] == ""
    widest = max(sum(len(str(k)) + len(str(v)) for k, v in row.items()) for row in table)
    assert widest < 120  # characters across: far inside a 1,600 px page


def test_a_progress_line_on_a_terminal_fits_its_width(monkeypatch, capsys):
    import os

    from alertdist.cli import progress

    monkeypatch.setattr(progress.shutil, "get_terminal_size", lambda *a: os.terminal_size((40, 20)))
    line = progress.ProgressLine("replaying into topic reanalysis_20231012")
    line.tty = True  # as on a terminal
    line.update("read 12,345, delivered 12,345, bad 0, 2,345 alerts/s, 160.2 MB/s", 0.5, final=True)
    shown = capsys.readouterr().err
    assert shown.startswith("\rreplaying into") and shown.endswith("\033[K\n")
    assert len(shown.removeprefix("\r").removesuffix("\033[K\n")) == 39 and "…" in shown


def test_clean_frees_old_nights_topics_and_archive_files_after_asking(
    kafka_bootstrap, unique, tmp_path, monkeypatch, capsys
):
    import datetime as dt
    import time

    from alertdist.archive import ArchiveOptions, archive_night
    from alertdist.archive.tarball import parse_md5sums
    from alertdist.cli.main import main as cli
    from alertdist.kafka.clients import admin_client
    from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
    from alertdist.publish.publisher import publish
    from alertdist.publish.sources import SourcePacket, simulated_alerts

    naming, archive = TopicNaming(survey=f"c{unique}"), tmp_path / "archive"
    nights = [dt.date(2023, 10, 11), dt.date(2023, 10, 12)]
    for seed, night in enumerate(nights):
        ensure_night_topics(admin_client(kafka_bootstrap), naming, night, TopicSettings(partitions=1))
        alerts = simulated_alerts(20, night=night, seed=seed)
        publish(
            (SourcePacket(f"{a.candid}.avro", a.packet, None) for a in alerts),
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            night=night,
        )
        archive_night(kafka_bootstrap, naming, night, str(archive), ArchiveOptions())
    monkeypatch.setenv("ALERTDIST_SURVEY", naming.survey)
    monkeypatch.setenv("ALERTDIST_ARCHIVE_URL", str(archive))

    def topics() -> set[str]:
        return {
            t
            for t in admin_client(kafka_bootstrap).list_topics(timeout=10).topics
            if t.startswith(f"{naming.survey}_2")
        }

    before = topics()
    assert {t[len(naming.survey) + 1 :][:8] for t in before} == {"20231011", "20231012"}
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli(["--bootstrap-servers", kafka_bootstrap, "clean"]) == 1  # no terminal to ask on, no --yes
    assert "confirm with --yes" in capsys.readouterr().err and topics() == before
    assert cli(["--bootstrap-servers", kafka_bootstrap, "clean", "--yes"]) == 0
    assert "nights 20231011:" in capsys.readouterr().out
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    while any("20231011" in t for t in topics()) and dt.datetime.now() < deadline:
        time.sleep(0.5)  # topic deletion completes asynchronously
    assert topics() == {t for t in before if "20231012" in t}
    left = sorted(p.name for p in archive.rglob("*") if p.is_file())
    assert not any("20231011" in name for name in left) and any("20231012" in name for name in left)
    assert not (archive / "parquet" / "night=20231011").exists()
    assert all("20231012" in name for name in parse_md5sums((archive / "MD5SUMS").read_text()))
