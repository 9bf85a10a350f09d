"""Filter plug-ins are untrusted code (issue 23): a live copy judges in a confined child process, with a deadline.

The plug-ins are in `tests.hostile_plugins`; each test runs a real live copy on a real broker (the session's) over
a simulated night, and reads what it wrote back from Kafka.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from alertdist.avro import codec
from alertdist.filters import ERROR, MAX_ANNOTATION_BYTES, PASSED, load_filter
from alertdist.filters.live import FilterFailingError, LiveOptions, run_live
from alertdist.nights.topics import TopicNaming
from alertdist.simulate.night import simulate_night
from tests.hostile_plugins import HANG_ON
from tests.test_filters_live import NIGHT, outputs_of, publish_night, read_topic

QUICK = {"state_poll_s": 0.5, "done_check_s": 0.2}
HOSTILE_ALERTS = 2000


@pytest.fixture(scope="module")
def packets() -> list[bytes]:
    return [a.packet for a in simulate_night(300, night=NIGHT, seed=7)]


def run_in_thread(timeout: float, **kwargs):
    """`run_live` with a time limit: a copy still running after ``timeout`` s fails the test (it hangs)."""
    outcome: dict = {}

    def run():
        try:
            outcome["report"] = run_live(**kwargs)
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the copy was still running after {timeout} s: the plug-in holds it"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


def candid(msg) -> int:
    return int(dict(msg.headers())["alertdist.candid"])


def test_a_hanging_plugin_gets_error_verdicts_within_its_deadline_and_the_copy_goes_on(kafka_bootstrap, packets):
    naming = TopicNaming(survey=f"h{uuid.uuid4().hex[:10]}")
    published = publish_night(kafka_bootstrap, naming, packets)
    assert HANG_ON in published
    options = LiveOptions(batch_size=50, batch_deadline_s=2.0, **QUICK)
    report = run_in_thread(
        120,
        filter_="tests.hostile_plugins:hangs_on_one",
        night=NIGHT,
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        options=options,
    )
    assert report.status == "finished" and report.lag == 0
    assert report.read == len(published) == report.passed + report.errors
    assert 1 <= report.errors <= options.batch_size  # only the batch the plug-in hung in

    errors = read_topic(kafka_bootstrap, naming.filter_errors_topic(NIGHT, "hangs_on_one"))
    failed = {int(codec.peek(m.value()).candid): dict(m.headers())["alertdist.error"].decode() for m in errors}
    assert HANG_ON in failed and len(failed) == report.errors
    assert "within its deadline (2 s a batch)" in failed[HANG_ON] and "restarted" in failed[HANG_ON]
    passed = {candid(m) for m in outputs_of(kafka_bootstrap, naming, "hangs_on_one")}
    assert passed == set(published) - set(failed)  # every other alert judged, after the restart too


def test_a_plugin_that_hangs_on_every_batch_stops_its_copy_with_why(kafka_bootstrap, packets):
    naming = TopicNaming(survey=f"a{uuid.uuid4().hex[:10]}")
    publish_night(kafka_bootstrap, naming, packets[:20])
    options = LiveOptions(batch_size=5, batch_deadline_s=1.0, failed_batches=2, **QUICK)
    with pytest.raises(FilterFailingError, match=r"failed 2 batches in a row \(the filter gave no verdict within"):
        run_in_thread(
            90,
            filter_="tests.hostile_plugins:always_hangs",
            night=NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            options=options,
        )


def test_a_plugin_that_ends_its_process_is_named_with_its_last_words(kafka_bootstrap, packets):
    naming = TopicNaming(survey=f"d{uuid.uuid4().hex[:10]}")
    publish_night(kafka_bootstrap, naming, packets[:10])
    options = LiveOptions(batch_size=5, batch_deadline_s=5.0, failed_batches=2, **QUICK)
    with pytest.raises(FilterFailingError) as failed:
        run_in_thread(
            90,
            filter_="tests.hostile_plugins:dies",
            night=NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            options=options,
        )
    assert "the filter's process ended (exit code 3; its last words: the catalogue ?[31mis gone)" in str(failed.value)


def test_annotations_over_the_cap_make_an_error_verdict_with_the_reason(kafka_bootstrap, packets):
    inline = load_filter("tests.hostile_plugins:big_notes")
    odd = next(p for p in packets if codec.peek(p).candid % 2)
    even = next(p for p in packets if not codec.peek(p).candid % 2)
    verdict = inline.judge(odd)
    assert verdict.outcome == ERROR and f"over the cap of {MAX_ANNOTATION_BYTES} bytes" in verdict.reason
    assert inline.judge(even).outcome == PASSED

    naming = TopicNaming(survey=f"b{uuid.uuid4().hex[:10]}")
    published = publish_night(kafka_bootstrap, naming, packets[:40])
    report = run_in_thread(
        90,
        filter_="tests.hostile_plugins:big_notes",
        night=NIGHT,
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        options=LiveOptions(**QUICK),
    )
    odds = {c for c in published if c % 2}
    assert report.status == "finished" and report.errors == len(odds) and report.passed == len(published) - len(odds)
    assert {candid(m) for m in outputs_of(kafka_bootstrap, naming, "big_notes")} == set(published) - odds


def test_the_plugin_finds_no_password_no_port_and_no_home(kafka_bootstrap, packets, monkeypatch):
    """The spy plug-in (its report comes back in its first alert's annotations) in a copy whose own process
    holds a password in its environment and has a world-readable secret file on disk."""
    secret = f"not-for-plugins-{uuid.uuid4().hex}"
    monkeypatch.setenv("ALERTDIST_KAFKA_LOGINS__ADMIN__PASSWORD", secret)
    home = Path(tempfile.mkdtemp(prefix="alertdist-spy-home-"))
    try:
        home.chmod(0o755)
        (home / "admin.password").write_text(secret)
        (home / "admin.password").chmod(0o644)
        naming = TopicNaming(survey=f"s{uuid.uuid4().hex[:10]}")
        publish_night(kafka_bootstrap, naming, packets[:3])
        report = run_in_thread(
            150,
            filter_="tests.hostile_plugins:spy",
            night=NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            options=LiveOptions(batch_deadline_s=25.0, **QUICK),
        )
    finally:
        (home / "admin.password").unlink()
        home.rmdir()
    assert report.status == "finished" and report.passed >= 1
    [first, *_] = outputs_of(kafka_bootstrap, naming, "spy")
    text = json.loads(dict(first.headers())["alertdist.annotations"])["report"]
    spied = json.loads(text)
    assert secret not in text and not [k for k in spied["env"] if k.startswith(("ALERTDIST", "PREFECT"))]
    assert spied["open_ports"] == []  # not the broker's, not anything's
    assert set(spied["kafka"].values()) == {"refused"}
    assert not [path for path, _ in spied["found"] if path.startswith(str(home))]
    if os.geteuid() == 0:
        assert spied["uid"] != 0
    assert dt.date(2023, 10, 12) == NIGHT


# ------------------------------------------------------------------------------ on the secure deployment


def _environments_of(home: Path) -> dict[int, tuple[str, str]]:
    """(command line, environment) of every process started for the night in ``home`` (its ALERTDIST_HOME)."""
    marker = f"ALERTDIST_HOME={home}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found[int(entry.name)] = (cmdline, environ.decode(errors="replace"))
    return found


@pytest.fixture(scope="module")
def hostile_night(tmp_path_factory):
    """`alertdist night --secure` with a bundled filter and the spy (`tests.hostile_plugins.spy`, started as
    `spy`); while it runs, the environment of every process it started is sampled. Returns what the test reads:
    the command, the spy's outputs and bright_transients' (read as the admin), the sampled environments, the
    services' passwords, the Prefect server."""
    from alertdist.cli.commands.kafka import secure_cluster
    from alertdist.kafka.clients import Brokers, scram_client_config
    from alertdist.nights.topics import TopicNaming
    from alertdist.settings import Settings
    from tests.test_secure_night import secure_night_run

    home = tmp_path_factory.mktemp("hostile-home")
    env: dict = {}
    sampled: dict[int, tuple[str, str]] = {}
    done_sampling = threading.Event()

    def sample():
        while not done_sampling.wait(0.5):
            sampled.update(_environments_of(home))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # enough alerts for three batches (500 at most each) the spy hangs in, whenever it starts: its copy then stops
    options = [
        "--alerts",
        str(HOSTILE_ALERTS),
        "--filter",
        "bright_transients",
        "--filter",
        "spy=tests.hostile_plugins:spy",
    ]
    options += ["--filter-deadline", "30"]
    with secure_night_run(home, *options, used_env=env) as (server, done):
        done_sampling.set()
        sampler.join()
        settings = Settings(home=home, kafka_port=int(env["ALERTDIST_KAFKA_PORT"]))
        cluster = secure_cluster(settings)
        admin = Brokers(
            cluster.bootstrap_servers,
            scram_client_config("admin", cluster.password("admin"), ca_location=cluster.ca_location),
        )
        naming = TopicNaming(survey="ztf")
        outputs = {name: outputs_of(admin, naming, name) for name in ("spy", "bright_transients")}
        passwords = [p.read_text().strip() for p in (home / "kafka" / "secure" / "secrets").glob("*.password")]
        passwords.append(server.auth_string().split(":", 1)[1])
        yield home, server, done, outputs, sampled, passwords


def test_a_hostile_plugin_on_the_secure_night_finds_nothing_and_the_night_is_archived(hostile_night):
    from tests.test_secure_night import _api

    home, server, done, outputs, _, passwords = hostile_night
    # the night was archived whole, and the run says the spy failed
    manifest = json.loads((home / "archive" / "manifests" / "ztf_20231012.json").read_text())
    assert sum(p["counts"]["written"] for p in manifest["programmes"].values()) == HOSTILE_ALERTS
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-4000:]
    said = done.stderr[done.stderr.find("The night FAILED") :]
    assert f"night 20231012 was archived ({HOSTILE_ALERTS} alerts in" in said, said
    assert "filter(s) failed: spy: FilterFailingError" in said and "bright_transients:" not in said, said
    [failed] = _api(
        server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["night-failed-filters-ztf-20231012"]}}}
    )
    assert "**spy**" in failed["data"] and "FilterFailingError" in failed["data"]
    [report] = _api(server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["night-filters-ztf-20231012"]}}})
    assert {row["filter"] for row in json.loads(report["data"])} == {"bright_transients", "spy"}

    # what the spy found: its report came back in the annotations of the alerts it passed
    assert outputs["spy"], "the spy judged no alert at all"
    for msg in outputs["spy"]:
        text = json.loads(dict(msg.headers())["alertdist.annotations"])["report"]
        spied = json.loads(text)
        assert [p for p in passwords if p in text] == []
        assert not [k for k in spied["env"] if k.startswith(("ALERTDIST", "PREFECT"))]
        assert not [path for path, _ in spied["found"] if path.startswith(str(home))]
        assert spied["open_ports"] == [] and set(spied["kafka"].values()) == {"refused"}
        assert spied["uid"] != 0
    # nothing the spy did reached another filter's output
    assert outputs["bright_transients"]
    assert {dict(m.headers())["alertdist.filter"] for m in outputs["bright_transients"]} == {b"bright_transients"}


def test_no_process_of_the_secure_night_but_the_operators_has_another_services_password(hostile_night):
    _, _, _, _, sampled, passwords = hostile_night
    started = {pid: (cmd, environ) for pid, (cmd, environ) in sampled.items() if "alertdist.cli.main" not in cmd}
    assert any("multiprocessing" in cmd for cmd, _ in started.values()), "no stage process was seen"
    assert any("prefect" in cmd for cmd, _ in started.values()), "the Prefect server was not seen"
    kafka = passwords[:-1]  # the Prefect server's own password is every Prefect client's (its API's login)
    leaks = {cmd[:100] for cmd, environ in started.values() for p in kafka if p in environ}
    assert leaks == set()


def test_a_stage_is_handed_its_own_login_and_no_other(monkeypatch):
    from alertdist.jobs.logins import logins_out_of_environment, stage_logins, use_logins
    from alertdist.settings import Settings, login_variable

    logins = {s: f"pw-{s}-{uuid.uuid4().hex[:6]}" for s in ("admin", "publisher", "archiver", "filter_spy")}
    for service, password in logins.items():
        monkeypatch.setenv(login_variable(service), password)
    monkeypatch.setenv("alertdist_kafka_logins__replay__password", "lower-case-counts-too")
    settings = Settings.load()
    mine = stage_logins(settings, "filter_spy")
    assert {k: v.get_secret_value() for k, v in mine.items()} == {login_variable("filter_spy"): logins["filter_spy"]}
    assert "pw-" not in repr(mine)  # handed to a task: never shown

    with logins_out_of_environment():
        assert not [v for v in os.environ.values() if v.startswith("pw-") or v == "lower-case-counts-too"]
        use_logins(mine)  # what a stage process does with what it was handed
        assert Settings.load().kafka_logins.keys() == {"filter_spy"}
        use_logins(stage_logins(settings, "archiver"))  # the same process, the next stage
        assert Settings.load().kafka_logins.keys() == {"archiver"}
    assert Settings.load().kafka_logins.keys() == {"admin", "publisher", "archiver", "filter_spy", "replay"}


def test_batches_of_any_size_reach_the_confined_filter(packets):
    """The shared memory a batch travels in grows with the batches (and a restart starts it anew)."""
    from alertdist.filters.confined import ConfinedFilter

    confined = ConfinedFilter("bright_transients")
    try:
        expected = [load_filter("bright_transients").judge(p) for p in packets]
        for size in (1, 20, 300, 20, 300):
            verdicts, judged = confined.judge(packets[:size])
            assert judged == size and verdicts == expected[:size]
    finally:
        confined.close()
