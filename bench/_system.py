"""What the whole-system benchmarks (`night.py`'s capacity search, `visits.py`) share while a night runs live:
latency readers that stream what they see, each filter group's lag, and the CPU of every process of the system
(per process and per kind of thread) between two moments.

Each script imports it as ``_system`` (Python puts the script's folder, bench/, first on the path).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue as queues
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

FILTERS = ["bright_transients", "solar_system", "variable_stars"]


def percentiles(values: list[float]) -> dict | None:
    """p50/p95/p99/max of ``values`` in ms (None when there are fewer than two)."""
    if len(values) < 2:
        return None
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {"n": len(values), "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": max(values)}


# ------------------------------------------------------------------------------------------ latency readers


def stream_latencies(bootstrap: str, topics: list[str], out, stop, **config) -> None:
    """In its own process: read ``topics`` live from their start and send ``(produced_ms, latency_ms)`` pairs (the
    ``alertdist.produced_ms`` header to the moment it is read) to ``out`` in chunks about every 0.25 s, until
    ``stop`` is set; ``config``: consumer settings (``isolation.level="read_committed"`` for filter outputs)."""
    from confluent_kafka import TopicPartition

    from alertdist.kafka.clients import consumer
    from alertdist.publish.publisher import HEADER_PRODUCED_MS

    c = consumer(bootstrap, **{"enable.partition.eof": False, "fetch.wait.max.ms": 100, **config})
    try:
        metadata = c.list_topics(timeout=30)
        c.assign([TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions])
        out.put("ready")
        chunk, sent = [], time.monotonic()
        while not stop.is_set():
            for msg in c.consume(1000, 0.1):
                if msg.error():
                    continue
                produced = int(dict(msg.headers())[HEADER_PRODUCED_MS])
                chunk.append((produced, time.time_ns() // 1_000_000 - produced))
            if chunk and time.monotonic() - sent > 0.25:
                out.put(chunk)
                chunk, sent = [], time.monotonic()
        out.put(chunk)
    finally:
        c.close()


class LatencyReaders:
    """A plain reader of the night's programme topics and a read_committed reader of each filter's outputs, each
    in its own process; `collect` gathers what they saw so far (``pairs["consumer"]``, ``pairs[filter]``)."""

    def __init__(self, bootstrap: str, inputs: list[str], outputs: dict[str, list[str]]):
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.queues: dict[str, object] = {}
        self.processes: list = []
        self.pairs: dict[str, list[tuple[int, int]]] = {}
        for name, topics, config in (
            ("consumer", inputs, {}),
            *((f, outputs[f], {"isolation.level": "read_committed"}) for f in outputs),
        ):
            q = context.Queue()
            reader = context.Process(target=stream_latencies, args=(bootstrap, topics, q, self.stop), kwargs=config)
            reader.start()
            if q.get(timeout=120) != "ready":
                raise RuntimeError("a latency reader did not start")
            self.queues[name], self.pairs[name] = q, []
            self.processes.append(reader)

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.processes}

    def collect(self) -> None:
        for name, q in self.queues.items():
            while True:
                try:
                    chunk = q.get_nowait()
                except queues.Empty:
                    break
                self.pairs[name].extend(chunk)

    def between(self, name: str, start_ms: int, end_ms: int) -> list[int]:
        """Latencies (ms) of the alerts ``name`` saw whose file time is in [start_ms, end_ms)."""
        return [latency for produced, latency in self.pairs[name] if start_ms <= produced < end_ms]

    def close(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 30
        for reader in self.processes:
            while reader.is_alive() and time.monotonic() < deadline:
                self.collect()  # a reader blocked on a full queue would never exit
                reader.join(0.2)
            if reader.is_alive():
                reader.terminate()
        self.collect()


# ---------------------------------------------------------------------------------------------- filter lag


class FilterLag:
    """Messages of the night's programme topics not yet committed by each filter's group (its lag)."""

    def __init__(self, bootstrap: str, inputs: list[str], groups: dict[str, str], partitions: int):
        from confluent_kafka import TopicPartition

        from alertdist.kafka.clients import admin_client

        self.admin, self.groups = admin_client(bootstrap), groups
        self.where = [TopicPartition(t, p) for t in inputs for p in range(partitions)]

    def ends(self) -> dict[tuple[str, int], int]:
        from confluent_kafka.admin import OffsetSpec

        asked = {tp: OffsetSpec.latest() for tp in self.where}
        found = self.admin.list_offsets(asked, request_timeout=30)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in found.items()}

    def lags(self, ends: dict[tuple[str, int], int] | None = None) -> dict[str, int]:
        """Each filter's lag against ``ends`` (default: the topics' current end offsets)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        ends = ends if ends is not None else self.ends()
        result = {}
        for name, group in self.groups.items():
            asked = [ConsumerGroupTopicPartitions(group, list(self.where))]
            listed = self.admin.list_consumer_group_offsets(asked)[group].result()
            done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in listed.topic_partitions}
            result[name] = sum(max(0, end - done.get(where, 0)) for where, end in ends.items())
        return result

    def wait_zero(self, timeout: float, ends: dict | None = None, every: float = 0.1) -> float | None:
        """Seconds until every filter's lag against ``ends`` (default: now's end offsets) is zero; None if not
        within ``timeout``."""
        started = time.monotonic()
        ends = ends if ends is not None else self.ends()
        while time.monotonic() - started < timeout:
            if not any(self.lags(ends).values()):
                return time.monotonic() - started
            time.sleep(every)
        return None


# --------------------------------------------------------------------------------------------- CPU per process


#: Kinds of thread, by the start of their name (/proc/<pid>/task/<tid>/comm): librdkafka's, the JVM's, Python's.
THREAD_KINDS = [
    ("rdk:broker", "librdkafka I/O"),
    ("rdk:", "librdkafka other"),
    ("data-plane-kafk", "broker requests and network"),  # names are cut to 15 characters
    ("controller-even", "broker controller"),
    ("quorum-", "broker controller"),
    ("C2 CompilerThre", "JVM JIT"),
    ("C1 CompilerThre", "JVM JIT"),
    ("GC Thread", "JVM GC"),
    ("G1 ", "JVM GC"),
    ("transaction-log", "broker transactions"),
    ("TxnMarkerSender", "broker transactions"),
    ("kafka-log-clean", "broker log"),
    ("kafka-schedule", "broker scheduler"),
    ("ThreadPoolExecu", "Python worker threads"),
    ("python", "Python main"),
    ("java", "JVM main"),
]


def thread_kind(name: str) -> str:
    for prefix, kind in THREAD_KINDS:
        if name.startswith(prefix):
            return kind
    return "other threads"


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of ``pid``: (name, CPU seconds so far)."""
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        found[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


@dataclass
class Snapshot:
    """CPU seconds so far of each thread of each process, by role; taken by `SystemCPU.snapshot`."""

    at: float
    threads: dict[int, tuple[str, dict[int, tuple[str, float]]]] = field(default_factory=dict)  # pid -> role, tids


class SystemCPU:
    """The system's processes and their roles: the broker's JVM, the Prefect server (and its children), and this
    script's process tree (the night flow; its stage processes, publisher at nice 0 and filters at nice 10, each
    with its confined plug-in children; the latency readers, which are not the system). ``skip_threads``: native
    ids of this process's threads that are the benchmark's own (the pipeline playing the camera)."""

    def __init__(self, broker_pid: int, prefect_pid: int, readers: set[int], skip_threads: set[int] | None = None):
        self.roots = {"broker (JVM)": broker_pid, "Prefect server": prefect_pid}
        self.readers, self.skip = readers, skip_threads or set()

    def _roles(self) -> dict[int, str]:
        roles: dict[int, str] = {}
        for role, pid in self.roots.items():
            with _gone():
                root = psutil.Process(pid)
                roles.update({p.pid: role for p in [root, *root.children(recursive=True)]})
        me = psutil.Process()
        roles[me.pid] = "night flow (the bench's process)"
        for child in me.children():
            with _gone():
                if child.pid in roles:  # the broker and the Prefect server, when this script started them
                    continue
                if child.pid in self.readers:
                    role = "latency readers (not the system)"
                elif child.cmdline()[-1:] != ["--multiprocessing-fork"] or "resource_tracker" in " ".join(
                    child.cmdline()
                ):
                    role = "other helpers"
                else:
                    role = "filter stage" if child.nice() >= 10 else "publish/archive stage"
                if role.endswith("stage"):  # its confined plug-in's process is counted beside it
                    role = f"{role} {child.pid}"
                    roles.update({p.pid: f"{role} plug-in" for p in child.children(recursive=True)})
                    roles[child.pid] = role
                else:
                    roles.update({p.pid: role for p in [child, *child.children(recursive=True)]})
        return roles

    def snapshot(self) -> Snapshot:
        shot = Snapshot(time.monotonic())
        for pid, role in self._roles().items():
            with _gone():
                threads = _threads(pid)
                if pid == os.getpid():
                    threads = {tid: t for tid, t in threads.items() if tid not in self.skip}
                shot.threads[pid] = (role, threads)
        return shot

    @staticmethod
    def between(before: Snapshot, after: Snapshot, alerts: int) -> dict:
        """CPU ms per alert between two snapshots: the system's total (readers excluded), per role, per kind of
        thread. A thread that ended in between is missed (its last interval); one that started counts whole."""
        roles: dict[str, float] = collections.defaultdict(float)
        kinds: dict[str, float] = collections.defaultdict(float)
        for pid, (role, threads) in after.threads.items():
            earlier = before.threads.get(pid, (role, {}))[1]
            for tid, (name, cpu) in threads.items():
                spent = cpu - earlier.get(tid, (name, 0.0))[1]
                generic = _STAGE.sub(r"\1 stage", role)
                roles[role] += spent
                if "not the system" not in role:
                    kinds[f"{generic}: {thread_kind(name)}"] += spent
        per_alert = 1000 / max(alerts, 1)
        system = sum(v for role, v in roles.items() if "not the system" not in role)
        return {
            "system_cpu_ms_per_alert": round(system * per_alert, 3),
            "system_cores": round(system / max(after.at - before.at, 1e-9), 2),
            "per_process": {role: round(v * per_alert, 3) for role, v in sorted(roles.items())},
            "per_thread_kind": {k: round(v * per_alert, 3) for k, v in sorted(kinds.items(), key=lambda x: -x[1])},
        }


_STAGE = re.compile(r"(filter|publish/archive) stage (\d+)")


def name_stages(found, stages: dict[str, dict]):
    """``found`` (`SystemCPU.between` results, as deep as they are) with each stage process's role renamed after
    the stage that ran in it (the night's ``stages``, each with its ``pid``)."""
    names: dict[str, str] = {}
    # the archive runs after the live part, in a process of the pool that may have run the publisher or a filter
    # before: such a process keeps the earlier stage's name
    for name, stage in sorted(stages.items(), key=lambda item: item[0] == "archive"):
        if "pid" in stage:
            names.setdefault(str(stage["pid"]), name)
    if isinstance(found, list):
        return [name_stages(x, stages) for x in found]
    if not isinstance(found, dict):
        return found
    return {
        _STAGE.sub(lambda m: names.get(m[2], m[0]), key): name_stages(value, stages) for key, value in found.items()
    }


class _gone:
    """Skip a process that ended while being looked at."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError))
