"""The one process supervisor: real processes started, recognised, left alone when not ours, stopped, killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from alertdist.infra import kafka_local, prefect_local, prometheus_local
from alertdist.supervisor import Supervised, alive, stop_all

_IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _stranger() -> subprocess.Popen:
    """A process this project did not start, once its command line is readable (it is empty while it execs)."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    deadline = time.monotonic() + 20
    while not psutil.Process(stranger.pid).cmdline():
        assert time.monotonic() < deadline, "sleep never showed its command line"
        time.sleep(0.01)
    return stranger


def _wait_for_line(path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def test_start_records_a_private_pid_and_stop_ends_it(tmp_path):
    sleeper = Supervised("sleeper", tmp_path / "sleeper.pid", ("time.sleep(60)",))
    process = sleeper.start(_python("import time; time.sleep(60)"), log_file=tmp_path / "sleeper.log")
    assert sleeper.pid() == process.pid
    assert (tmp_path / "sleeper.pid").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sleeper.log").stat().st_mode & 0o777 == 0o600
    assert os.getsid(process.pid) == process.pid  # a session of its own: it outlives the command that started it
    messages = []
    assert sleeper.stop(timeout=10, log=messages.append)
    assert not alive(process.pid)
    assert not (tmp_path / "sleeper.pid").exists()
    assert messages == ["sleeper stopped"]
    assert not sleeper.stop(log=messages.append)  # a second stop finds nothing
    assert messages[-1] == "sleeper is not running (no live pid recorded)"


def test_a_reused_pid_is_not_ours_and_is_never_signalled(tmp_path):
    stranger = _stranger()
    try:
        claimed = Supervised("ours", tmp_path / "ours.pid", ("kafka.Kafka",))
        (tmp_path / "ours.pid").write_text(f"{stranger.pid}\n")
        assert claimed.pid() is None
        assert not claimed.stop(timeout=1)
        assert stranger.poll() is None and alive(stranger.pid)
        assert not (tmp_path / "ours.pid").exists()  # the stale record is dropped
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_that_ignores_term_is_killed_after_the_grace_period(tmp_path):
    stubborn = Supervised("stubborn", tmp_path / "stubborn.pid", ("SIG_IGN",))
    log_file = tmp_path / "stubborn.log"
    process = stubborn.start(_python(_IGNORE_TERM + "time.sleep(60)"), log_file=log_file)
    _wait_for_line(log_file, "ready")
    messages = []
    began = time.monotonic()
    assert stop_all([stubborn], timeout=1.0, log=messages.append) == [stubborn]
    assert time.monotonic() - began < 10
    assert not alive(process.pid)
    assert messages == [f"stubborn (pid {process.pid}) did not stop within 1 s; killing it", "stubborn stopped"]


def test_a_session_stop_ends_the_children_too(tmp_path):
    code = "import subprocess, time; c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True); time.sleep(60)"
    parent = Supervised("parent", tmp_path / "parent.pid", ("subprocess.Popen",), session=True)
    log_file = tmp_path / "parent.log"
    parent.start(_python(code), log_file=log_file)
    _wait_for_line(log_file, "\n")
    child = int(log_file.read_text().split()[0])
    assert alive(child)
    assert parent.stop(timeout=10)
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "the child of a stopped session still runs"
        time.sleep(0.05)


def test_prefect_and_prometheus_never_stop_a_stranger_whose_pid_they_recorded(tmp_path):
    """Before the supervisor, Prefect's stop signalled whatever process group held the recorded pid."""
    stranger = _stranger()
    try:
        server = prefect_local.PrefectServer(home=tmp_path / "prefect", port=1, auth=False)
        worker = prefect_local.Worker(server)
        prometheus = prometheus_local.PrometheusServer(home=tmp_path / "prometheus", port=1)
        for pid_file in (server.pid_file, worker.pid_file, prometheus.pid_file, prometheus.monitor_pid_file):
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(f"{stranger.pid}\n")
        prefect_local.stop(server, timeout=1, log=lambda _: None)
        prefect_local.stop_worker(worker, timeout=1, log=lambda _: None)
        prometheus_local.stop(prometheus, timeout=1, log=lambda _: None)
        prometheus_local.stop_monitor(prometheus, timeout=1, log=lambda _: None)
        assert stranger.poll() is None, "a stop signalled a process this project did not start"
        assert prefect_local.worker_status(worker) == "Prefect worker down"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_real_prefect_server_is_recognised_by_its_command_line_and_stopped(tmp_path):
    """The marks match what `prefect server start` really runs as, so `stop` ends it and its children."""
    server = prefect_local.PrefectServer(tmp_path / "prefect", kafka_local.free_port(), auth=False)
    prefect_local.start(server, log=lambda _: None)
    try:
        pid = server.process.pid()
        assert pid is not None and int(server.pid_file.read_text()) == pid
        children = psutil.Process(pid).children(recursive=True)
        assert f"(pid {pid})" in prefect_local.status(server)
    finally:
        prefect_local.stop(server, log=lambda _: None)
    assert not alive(pid) and not any(alive(child.pid) for child in children)
    assert prefect_local.status(server) == "Prefect server down"
