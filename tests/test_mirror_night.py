"""A whole night across the mirror (`alertdist night --two-tier`), and MirrorMaker 2 killed mid-night: every
alert arrives downstream exactly once and the public cluster's archive equals the producing cluster's."""

from __future__ import annotations

import datetime as dt
import json
import tarfile
import threading
import time
from pathlib import Path

import pytest

from alertdist.cli.main import main as cli
from alertdist.filters.live import group_id_for
from alertdist.infra import kafka_local
from alertdist.jobs import mirror
from alertdist.jobs.archive import archive_night
from alertdist.jobs.publish import publish_night
from alertdist.mirror import process
from alertdist.mirror.syncs import read_offset_syncs
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicSettings
from alertdist.publish.sources import SourceSpec
from alertdist.settings import Settings
from tests.kafka_support import committed_offsets
from tests.mirror_support import contents, two_tier_settings
from tests.test_night_flow import _artifact


@pytest.fixture(scope="module")
def settings(two_clusters, tmp_path_factory) -> Settings:
    return two_tier_settings(two_clusters, tmp_path_factory.mktemp("two-tier-home"))


@pytest.fixture(scope="module", autouse=True)
def stop_the_mirror_at_the_end(settings):
    yield
    process.stop(mirror.mirror_home(settings))


def test_alertdist_night_two_tier_runs_a_whole_night_across_the_mirror(settings, prefect_server, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL

    for name in ("home", "bootstrap_servers", "public_bootstrap_servers", "mirror_rest_port"):
        monkeypatch.setenv(f"ALERTDIST_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    archive = settings.home / "archive"
    args = ["--night", "20231012", "--alerts", "300", "--partitions", "3", "--archive", str(archive)]
    assert cli(["night", "--two-tier", *args]) == 0
    out = capsys.readouterr().out
    assert "300 alerts published, 300 archived (0 duplicates dropped)" in out
    assert f"Two-tier: published to {settings.bootstrap_servers}, 300 alerts mirrored to" in out

    night = dt.date(2023, 10, 12)
    downstream = read_night_state(settings.public_bootstrap_servers, settings.naming, night)
    upstream = read_night_state(settings.bootstrap_servers, settings.naming, night)
    assert downstream.closed and upstream.closed and downstream.cluster != upstream.cluster
    manifest = json.loads((archive / "manifests" / f"ztf_{night:%Y%m%d}.json").read_text())
    read_up_to = {
        a["topic"]: {int(p): e["end_offset"] for p, e in a["partitions"].items()}
        for a in manifest["programmes"].values()
    }
    assert read_up_to == downstream.end_offsets != upstream.end_offsets  # the archiver read the public cluster
    topics = list(downstream.end_offsets)
    for name in ("bright_transients", "solar_system", "variable_stars"):  # the filters consumed the public cluster...
        group = group_id_for(settings.naming, night, name)
        # at or past each closing offset (a position moves past the transaction markers that end a partition)
        assert committed_offsets(settings.public_bootstrap_servers, group, topics, 3) >= sum(
            sum(p.values()) for p in downstream.end_offsets.values()
        )
        assert committed_offsets(settings.bootstrap_servers, group, topics, 3) == 0  # ...and never the producing one
    lag = _artifact(f"mirror-lag-ztf-{night:%Y%m%d}")
    assert lag is not None and lag.data == 100.0  # the mirror's lag, shown as the night went, down to none


def _night_with_a_fault(settings, night: dt.date, fault) -> list[int]:
    """Publish a simulated night upstream (~35 s) with the mirror kept running as the `mirror` deployment keeps it,
    call ``fault()`` once the night is being mirrored, and close the night downstream; the mirror's restarts."""
    stop, restarts = threading.Event(), []
    process.stop(mirror.mirror_home(settings))  # the one an earlier test left running: this keeper starts its own
    keeper = threading.Thread(
        target=lambda: restarts.append(mirror.keep_mirror_running(settings, stop, every_s=0.5)), daemon=True
    )
    keeper.start()
    publisher = threading.Thread(
        target=publish_night,
        args=(settings, night, SourceSpec.parse("simulate:3000:5", speed=30.0)),
        kwargs={"topics": TopicSettings(partitions=3)},
        daemon=True,
    )
    publisher.start()
    deadline = time.monotonic() + 180
    while not any(
        t.startswith(f"ztf_{night:%Y%m%d}") and up > 0
        for (t, _), (up, _) in read_offset_syncs(settings.bootstrap_servers).items()
    ):
        assert time.monotonic() < deadline, "nothing of the night was mirrored"
        time.sleep(0.2)
    fault()
    publisher.join(timeout=300)
    assert not publisher.is_alive()
    try:
        mirror.close_night_downstream(settings, night, timeout=300)
    finally:
        stop.set()
        keeper.join(timeout=60)
    return restarts


def _assert_mirrored_exactly_once(settings, night: dt.date, tmp_path: Path) -> None:
    """Downstream holds every alert of the night exactly once, and its archive equals the upstream one."""
    upstream = contents(settings.bootstrap_servers, settings, night)
    downstream = contents(settings.public_bootstrap_servers, settings, night)
    assert downstream == upstream and sum(sum(c.values()) for c in downstream.values()) == 3000
    assert all(n == 1 for messages in downstream.values() for n in messages.values())  # exactly once
    up = archive_night(settings, night, dest=str(tmp_path / "up"))
    public = settings.model_copy(update={"bootstrap_servers": settings.public_bootstrap_servers})
    down = archive_night(public, night, dest=str(tmp_path / "down"))
    assert up.totals() == down.totals() == {"read": 3000, "written": 3000, "duplicates": 0, "rejected": 0}
    assert sorted((tmp_path / "up").glob("*.tar.gz"))
    for tarball in sorted((tmp_path / "up").glob("*.tar.gz")):
        assert _members(tarball) == _members(tmp_path / "down" / tarball.name), tarball.name


def test_a_mirror_killed_mid_night_loses_and_repeats_nothing(settings, tmp_path):
    home, night = mirror.mirror_home(settings), dt.date(2023, 10, 13)

    def kill() -> None:
        assert process.stop(home, kill=True)  # SIGKILL: no clean shutdown, a transaction left open

    assert _night_with_a_fault(settings, night, kill) == [1]  # restarted once, then stopped
    assert process.status(home).pid is None
    _assert_mirrored_exactly_once(settings, night, tmp_path)


def test_the_public_broker_killed_mid_night_loses_and_repeats_nothing(settings, two_clusters, tmp_path):
    def kill_and_restart() -> None:
        kafka_local.stop_node(two_clusters.public, 1, kill=True, log=lambda *_: None)
        time.sleep(3)
        kafka_local.start(two_clusters.public, log=lambda *_: None)

    _night_with_a_fault(settings, dt.date(2023, 10, 14), kill_and_restart)
    _assert_mirrored_exactly_once(settings, dt.date(2023, 10, 14), tmp_path)


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def test_the_mirror_deployment_restarts_a_killed_mirror_and_stops_it_after_its_hours(
    settings, prefect_server, monkeypatch
):
    from alertdist.flows.mirror import run_mirror

    for name in ("home", "mirror_rest_port"):
        monkeypatch.setenv(f"ALERTDIST_{name.upper()}", str(getattr(settings, name)))
    home, restarts = mirror.mirror_home(settings), []
    process.stop(home)
    servers = {
        "bootstrap_servers": settings.bootstrap_servers,
        "public_bootstrap_servers": settings.public_bootstrap_servers,
    }
    run = threading.Thread(target=lambda: restarts.append(run_mirror(**servers, check_every_s=0.5, hours=60 / 3600)))
    run.start()
    deadline = time.monotonic() + 60
    while not process.status(home).answering:
        assert time.monotonic() < deadline, "the deployment did not start MirrorMaker 2"
        time.sleep(0.2)
    first, deadline = process.status(home).pid, time.monotonic() + 120
    process.stop(home, kill=True)
    while process.status(home).pid in (None, first):
        assert time.monotonic() < deadline, "the deployment did not restart MirrorMaker 2"
        time.sleep(0.2)
    run.join(timeout=120)
    assert restarts and restarts[0] >= 1 and not process.status(home).running  # stopped when its hours were over
