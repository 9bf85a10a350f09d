"""Faults on a replicated 3-broker cluster, each with exact counts: a night loses no alert and doubles none.

One 3-node KRaft cluster for the module (night topics: replication 3, min.insync.replicas 2; the producer uses
acks=all). Injected: a broker SIGKILLed mid-publishing; a filter and the archiver SIGKILLed mid-run and
restarted; the whole cluster down when the publisher starts; storage unavailable while archiving.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka.admin import ConfigResource

from alertdist.archive import ArchiveOptions, archive_night, read_manifest, verify_night
from alertdist.archive.storage import TEMP_PREFIX
from alertdist.avro import codec
from alertdist.filters import alert_filter
from alertdist.filters.live import group_id_for
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import PublishProgress, publish
from alertdist.publish.sources import NIGHT_DONE, SourcePacket, paced, simulated_alerts
from tests.conftest import REPO, start_test_cluster
from tests.kafka_support import committed_offsets, read_to_end

NIGHT = dt.date(2023, 10, 12)
NIGHT_TEXT = f"{NIGHT:%Y%m%d}"
PARTITIONS = 6
ALERTDIST = str(Path(sys.executable).parent / "alertdist")
_quiet = lambda *_: None  # noqa: E731


def _note(text: str) -> None:
    """The exact counts of a fault run, for the closing note (shown with pytest -s)."""
    print(f"[fault] {text}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_test_cluster(tmp_path_factory.mktemp("kafka3"), brokers=3)
    try:
        yield cluster
    finally:
        kafka_local.stop(cluster, log=_quiet)


@pytest.fixture
def healthy(cluster):
    """The cluster with every node up before and after the test, whatever the test killed."""
    kafka_local.start(cluster, log=_quiet)
    yield cluster
    kafka_local.start(cluster, log=_quiet)


def _night(seed: int, n: int) -> dict[int, bytes]:
    """A simulated night: candid -> packet."""
    return {a.candid: a.packet for a in simulated_alerts(n, night=NIGHT, seed=seed)}


def _env(cluster, naming: TopicNaming, tmp_path: Path) -> dict:
    return {
        **os.environ,
        "ALERTDIST_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "ALERTDIST_SURVEY": naming.survey,
        "ALERTDIST_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(REPO),
    }


def _archived_candids(dest: Path, naming: TopicNaming) -> Counter:
    """candid -> how many times it is in the night's tarballs; also checks each Parquet file holds the same."""
    manifest = read_manifest(str(dest), naming.survey, NIGHT_TEXT)
    found: Counter = Counter()
    for archive in manifest.programmes.values():
        with tarfile.open(dest / archive.files["tarball"]["path"]) as tar:
            members = [int(m.name.removesuffix(".avro")) for m in tar if m.isfile()]
        table = pq.read_table(dest / archive.files["parquet"]["path"], columns=["candid"])
        assert sorted(table.column("candid").to_pylist()) == sorted(members)
        found.update(members)
    return found


def _assert_archive_holds_exactly(dest: Path, naming: TopicNaming, night: dict[int, bytes]) -> None:
    found = _archived_candids(dest, naming)
    assert sum(found.values()) == len(night) and set(found) == set(night)  # count and candid set
    assert max(found.values()) == 1  # each alert exactly once
    manifest = read_manifest(str(dest), naming.survey, NIGHT_TEXT)
    assert manifest.totals()["written"] == len(night)


# ------------------------------------------------------------------------------------------------ the cluster


def test_night_topics_on_three_brokers_have_three_replicas_and_min_isr_two(healthy, unique):
    naming = TopicNaming(survey=f"rf{unique}")
    admin = admin_client(healthy.bootstrap_servers)
    ensure_night_topics(admin, naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    topic = naming.programme_topic(NIGHT, 1)
    deadline = time.monotonic() + 30  # each broker learns of a new topic on its own schedule
    while True:
        found = admin.list_topics(timeout=10).topics.get(topic)
        partitions = found.partitions.values() if found is not None else []
        if (len(partitions) == PARTITIONS and all(len(p.isrs) == 3 for p in partitions)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(partitions) == PARTITIONS and all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in partitions)
    assert len({p.leader for p in partitions}) == 3  # leadership spread over the three nodes
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert admin.describe_configs([resource])[resource].result()["min.insync.replicas"].value == "2"


# -------------------------------------------------------------------------- a broker killed mid-publishing


def test_sigkill_of_a_broker_mid_night_publishing_continues_and_the_archive_holds_every_alert_once(
    healthy, unique, tmp_path
):
    naming = TopicNaming(survey=f"bk{unique}")
    admin = admin_client(healthy.bootstrap_servers)
    ensure_night_topics(admin, naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    night = _night(seed=31, n=400)
    # the controller: killing it moves the metadata quorum's leadership as well as partition leaders
    victim = admin.describe_cluster(request_timeout=10).result().controller.id
    at_kill: list[int] = []

    def on_progress(p: PublishProgress) -> None:
        if not at_kill and p.delivered >= len(night) // 3:
            at_kill.append(p.delivered)
            kafka_local.stop_node(healthy, victim, kill=True, log=_quiet)

    source = paced((SourcePacket(f"{c}.avro", p, None) for c, p in night.items()), rate_per_minute=2400)
    result = publish(
        source,
        bootstrap_servers=healthy.bootstrap_servers,
        naming=naming,
        night=NIGHT,
        progress=on_progress,
        progress_every_s=0.2,
    )

    assert at_kill and at_kill[0] < len(night), "the broker must die mid-night"
    assert not [n for n in kafka_local.status(healthy) if n.node_id == victim and n.running]
    assert result.read == result.delivered_total == len(night) and result.rejected_total == 0 and result.failed == 0
    assert result.closed
    state = read_night_state(healthy.bootstrap_servers, naming, NIGHT)
    programme_topics = list(naming.programme_topics(NIGHT).values())
    assert state.total_messages(programme_topics) == len(night)  # nothing doubled in Kafka itself

    dest = tmp_path / "archive"  # archived with the node still dead: two replicas of three suffice
    manifest = archive_night(
        healthy.bootstrap_servers, naming, NIGHT, str(dest), ArchiveOptions(work_dir=str(tmp_path))
    )
    assert manifest.totals()["duplicates"] == 0
    _assert_archive_holds_exactly(dest, naming, night)
    _note(
        f"broker {victim} (the controller) SIGKILLed after {at_kill[0]}/{len(night)} deliveries: read "
        f"{result.read}, delivered {result.delivered_total}, failed {result.failed}; Kafka holds "
        f"{state.total_messages(programme_topics)} messages; archive {manifest.totals()['written']} alerts, "
        f"{manifest.totals()['duplicates']} duplicates, candid set equal"
    )


# ---------------------------------------------------------------- a filter and the archiver killed mid-run


@alert_filter(name="slow_even", fields=("candid", "candidate"))
def slow_even(alert):
    """Every alert with an even candid, slowly, so that a kill lands mid-night."""
    time.sleep(0.01)
    return alert["candid"] % 2 == 0


def _committed(bootstrap: str, group: str, topics: list[str]) -> int:
    return committed_offsets(bootstrap, group, topics, PARTITIONS)


def test_sigkill_of_a_filter_and_the_archiver_mid_run_then_restart_gives_exactly_once_outputs(
    healthy, unique, tmp_path
):
    naming = TopicNaming(survey=f"fa{unique}")
    ensure_night_topics(admin_client(healthy.bootstrap_servers), naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    night = _night(seed=32, n=300)
    published = publish(
        [SourcePacket(f"{c}.avro", p, None) for c, p in night.items()],
        bootstrap_servers=healthy.bootstrap_servers,
        naming=naming,
        night=NIGHT,
    )
    assert published.delivered_total == len(night) and published.closed

    env = _env(healthy, naming, tmp_path)
    dest = tmp_path / "archive"
    filter_cmd = [
        ALERTDIST,
        "filter",
        "run",
        "tests.test_faults:slow_even",
        "--night",
        NIGHT_TEXT,
        "--batch-size",
        "20",
    ]
    archive_cmd = [
        ALERTDIST,
        "archive",
        "--night",
        NIGHT_TEXT,
        "--dest",
        str(dest),
        "--row-group-rows",
        "5",
        "--work-dir",
        str(tmp_path),
        "--quiet",
    ]
    topics = list(naming.programme_topics(NIGHT).values())
    group = group_id_for(naming, NIGHT, "slow_even")

    filter_run = subprocess.Popen(filter_cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    archive_run = subprocess.Popen(archive_cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        filter_killed = archive_killed = False
        while not (filter_killed and archive_killed):
            assert time.monotonic() < deadline, "the filter or the archiver never got under way"
            if not filter_killed and _committed(healthy.bootstrap_servers, group, topics) >= 40:
                filter_run.send_signal(signal.SIGKILL)
                filter_killed = True
            if not archive_killed and any(
                p.name.startswith(TEMP_PREFIX) and p.stat().st_size > 0 for p in dest.rglob("*") if p.is_file()
            ):
                archive_run.send_signal(signal.SIGKILL)
                archive_killed = True
            for run, killed in ((filter_run, filter_killed), (archive_run, archive_killed)):
                assert killed or run.poll() is None, run.communicate()[1].decode()[-2000:]
            time.sleep(0.02)
    finally:
        for run in (filter_run, archive_run):
            if run.poll() is None:
                run.kill()
            run.wait(30)
    assert filter_run.returncode == archive_run.returncode == -signal.SIGKILL
    done_at_kill = _committed(healthy.bootstrap_servers, group, topics)
    assert 0 < done_at_kill < len(night), "the filter must die mid-night"
    # no partial file under a final name: only a programme finished before the kill may stand there, whole (the
    # very bytes the re-run writes), and the night itself (manifest, MD5SUMS) is unfinished
    finals = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)}
    assert not any(p.parent.name == "manifests" or p.name == "MD5SUMS" for p in finals)

    reruns = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for cmd in (filter_cmd, archive_cmd)
    ]
    outs = [run.communicate(timeout=300) for run in reruns]
    for run, (out, err) in zip(reruns, outs):
        assert run.returncode == 0, (out + err).decode()[-3000:]

    outputs = read_to_end(healthy.bootstrap_servers, [naming.filter_output_topic(t, "slow_even") for t in topics])
    passed = Counter(int(dict(m.headers())["alertdist.candid"]) for m in outputs)
    assert sorted(passed) == sorted(c for c in night if c % 2 == 0) and max(passed.values()) == 1
    assert all(m.value() == night[int(dict(m.headers())["alertdist.candid"])] for m in outputs)
    assert _committed(healthy.bootstrap_servers, group, topics) == len(night)
    _assert_archive_holds_exactly(dest, naming, night)
    assert [p for p in dest.rglob("*") if p.name.startswith(TEMP_PREFIX)] == []
    assert {p: p.read_bytes() for p in finals} == finals
    verify_night(
        str(dest),
        read_manifest(str(dest), naming.survey, NIGHT_TEXT),
        read_night_state(healthy.bootstrap_servers, naming, NIGHT),
    )
    _note(
        f"filter SIGKILLed at {done_at_kill}/{len(night)} committed, archiver SIGKILLed mid-write; after restart "
        f"{sum(passed.values())} filter outputs for {len([c for c in night if c % 2 == 0])} passing alerts "
        f"(max {max(passed.values())} per candid), archive {sum(_archived_candids(dest, naming).values())} alerts"
    )


# ------------------------------------------------------------------- the whole cluster down at the start


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_whole_cluster_down_when_the_publisher_starts_it_waits_keeps_the_drop_folder_and_publishes_later(
    healthy, unique, tmp_path, prefect_server
):
    from alertdist.flows.publish import publish_night
    from alertdist.simulate.night import write_drop_folder

    naming = TopicNaming(survey=f"cd{unique}")
    night = _night(seed=33, n=120)
    folder = tmp_path / "drop"
    write_drop_folder(simulated_alerts(120, night=NIGHT, seed=33), folder)
    (folder / NIGHT_DONE).touch()
    assert {int(p.stem) for p in folder.glob("*.avro")} == set(night)
    kafka_local.stop(healthy, log=_quiet)

    lines = _Lines()
    logging.getLogger("prefect").addHandler(lines)
    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault(
            "result",
            publish_night(
                source=str(folder),
                night=NIGHT_TEXT,
                partitions=3,
                bootstrap_servers=healthy.bootstrap_servers,
                survey=naming.survey,
            ),
        ),
        daemon=True,
    )
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while not any("Retry" in line or "retry" in line for line in lines.lines):
            assert runner.is_alive() and time.monotonic() < deadline, f"no retry announced: {lines.lines[-5:]}"
            time.sleep(0.2)
        assert len(list(folder.glob("*.avro"))) == len(night)  # every packet kept while Kafka is away
        kafka_local.start(healthy, log=_quiet)
        runner.join(240)
    finally:
        logging.getLogger("prefect").removeHandler(lines)
    assert not runner.is_alive(), "the publisher did not finish after the cluster came back"
    result = outcome["result"]
    assert result["read"] == sum(result["delivered"].values()) == len(night)
    assert result["rejected"] == {} and result["failed"] == 0 and result["closed"]
    assert list(folder.glob("*.avro")) == []  # each file settled once Kafka had it
    messages = read_to_end(healthy.bootstrap_servers, list(naming.programme_topics(NIGHT).values()))
    assert sorted(int(dict(m.headers())["alertdist.candid"]) for m in messages) == sorted(night)
    assert all(m.value() == night[codec.peek(m.value()).candid] for m in messages)
    retry_lines = [line for line in lines.lines if "etry" in line]
    _note(
        f"cluster down at start: {len(night)} files kept while down; first retry line: {retry_lines[0][:300]!r}; "
        f"after restart read {result['read']}, delivered {sum(result['delivered'].values())}, "
        f"{len(messages)} messages in Kafka, {len(list(folder.glob('*.avro')))} files left"
    )
    assert any(
        "transport" in line.lower() or "broker" in line.lower() or "metadata" in line.lower() for line in lines.lines
    ), retry_lines  # says why it waits


# ------------------------------------------------------------------------------- storage unavailable


def _closed_night(cluster, naming: TopicNaming, seed: int, n: int) -> dict[int, bytes]:
    ensure_night_topics(admin_client(cluster.bootstrap_servers), naming, NIGHT, TopicSettings(partitions=2))
    night = _night(seed=seed, n=n)
    result = publish(
        [SourcePacket(f"{c}.avro", p, None) for c, p in night.items()],
        bootstrap_servers=cluster.bootstrap_servers,
        naming=naming,
        night=NIGHT,
    )
    assert result.closed and result.delivered_total == n
    return night


def _archive_with_retries(cluster, naming: TopicNaming, dest: str, options: ArchiveOptions, retries: int = 2):
    """The archive flow's task, with its own retry condition but second-long delays."""
    from prefect.client.orchestration import get_client

    from alertdist.settings import Settings
    from alertdist.tasks.archive import archive_night

    settings = Settings.load(bootstrap_servers=cluster.bootstrap_servers, survey=naming.survey)
    task = archive_night.with_options(retries=retries, retry_delay_seconds=1)
    final = task(settings, NIGHT, dest, [1], options, return_state=True)
    with get_client(sync_client=True) as client:
        run_count = client.read_task_run(final.state_details.task_run_id).run_count
    return final, run_count


def test_an_unwritable_destination_is_retried_then_fails_clearly_with_no_partial_output(
    healthy, unique, tmp_path, prefect_server
):
    naming = TopicNaming(survey=f"uw{unique}")
    _closed_night(healthy, naming, seed=34, n=60)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive root should be")
    dest = blocker / "archive"

    final, run_count = _archive_with_retries(healthy, naming, str(dest), ArchiveOptions(work_dir=str(tmp_path)))

    assert final.is_failed() and run_count == 3  # the first attempt and two retries
    with pytest.raises(Exception) as failure:
        final.result()
    assert str(dest) in str(failure.value)  # says where it could not write
    assert blocker.read_text() == "a file where the archive root should be"
    assert [p for p in tmp_path.rglob(f"{naming.survey}*") if p.is_file()] == []  # nothing written anywhere
    _note(f"unwritable destination: {run_count} attempts, then failed: {str(failure.value)[:200]!r}")


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    state = {"server": server, "endpoint": f"http://{host}:{port}", "port": port}
    yield state
    state["server"].stop()


def test_s3_unavailable_during_the_archive_is_retried_then_fails_clearly_with_no_partial_output(
    healthy, unique, tmp_path, prefect_server, s3_server
):
    import boto3
    from moto.server import ThreadedMotoServer

    naming = TopicNaming(survey=f"s3{unique}")
    night = _closed_night(healthy, naming, seed=35, n=60)
    bucket = f"archive-{unique}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket)
    options = ArchiveOptions(
        work_dir=str(tmp_path),
        storage_options={
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": s3_server["endpoint"], "region_name": "us-east-1"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    )
    url = f"s3://{bucket}/ztf"
    s3_server["server"].stop()  # the object store goes away

    try:
        final, run_count = _archive_with_retries(healthy, naming, url, options)
    finally:  # the same in-process store comes back on the same port
        s3_server["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_server["port"], verbose=False)
        s3_server["server"].start()

    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # no partial output
    assert final.is_failed() and run_count == 3
    with pytest.raises(Exception) as failure:
        final.result()
    assert url in str(failure.value) or bucket in str(failure.value)
    assert "check the destination" in str(failure.value)
    del night
