"""What the benchmarks share: a private broker on free ports, Kafka's own producer benchmark, CPU time, output.

Each script imports it as ``_common`` (Python puts the script's folder, bench/, first on the path).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from alertdist.infra import kafka_local, prefect_local
from alertdist.settings import Settings

#: The producer settings ProducerPerformance runs with, the publisher's and replay's own.
SAME_SETTINGS = {"linger.ms": "20", "batch.size": str(4 * 1024 * 1024), "acks": "all", "enable.idempotence": "true"}


def say(text: str) -> None:
    print(text, flush=True)


def kafka_libs() -> Path:
    """The project's installed Kafka jars."""
    return Settings.load().kafka_home / "libs"


def start_cluster(folder: Path, heap: str = "384m") -> kafka_local.KafkaCluster:
    """A private single-node broker in ``folder`` on free ports, on the project's jars; stop it with
    ``kafka_local.stop``."""
    return kafka_local.start_on_free_ports(folder, libs=kafka_libs(), heap=heap, log=lambda *_: None)


@contextlib.contextmanager
def private_broker(prefix: str, heap: str = "384m") -> Iterator[kafka_local.KafkaCluster]:
    """A private broker in a scratch folder for the length of the block; stopped and its folder deleted after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        cluster = start_cluster(Path(folder) / "kafka", heap)
        try:
            yield cluster
        finally:
            kafka_local.stop(cluster, log=lambda *_: None)


@contextlib.contextmanager
def private_prefect_server(prefix: str) -> Iterator[prefect_local.PrefectServer]:
    """A private Prefect server (SQLite in a scratch folder, a free port) for the block, its client settings in
    the environment (before Prefect is imported: processes started inside, Dask workers too, inherit them)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        server = prefect_local.PrefectServer(Path(folder), kafka_local.free_port())
        prefect_local.start(server, log=lambda *_: None)
        os.environ.update(server.client_env())
        try:
            yield server
        finally:
            prefect_local.stop(server, log=lambda *_: None)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of this process, or of another one from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def java_tool(libs: Path, tool: str, *args: str, heap: str = "512m") -> list[str]:
    """The command line of one of Kafka's own tools (``org.apache.kafka.tools.<tool>``) on the project's jars."""
    return ["java", f"-Xmx{heap}", "-cp", f"{libs}/*", f"org.apache.kafka.tools.{tool}", *args]


def java_producer_performance(
    libs: Path, bootstrap: str, topic: str, n: int, size: int, compression: str, *, timeout: float = 900
) -> float:
    """MB/s (1e6) that Kafka's ProducerPerformance reports for n records of size bytes."""
    props = {
        **SAME_SETTINGS,
        "bootstrap.servers": bootstrap,
        "compression.type": compression,
        "max.request.size": str(10 * 1024 * 1024),
        "buffer.memory": str(512 * 1024 * 1024),
    }
    settings = [f"{k}={v}" for k, v in props.items()]
    records = ["--num-records", str(n), "--record-size", str(size), "--throughput", "-1"]
    command = java_tool(
        libs, "ProducerPerformance", "--topic", topic, *records, "--producer-props", *settings, heap="1g"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    final = [line for line in done.stdout.splitlines() if "records sent" in line and "avg latency" in line]
    if done.returncode != 0 or not final:
        raise RuntimeError(f"ProducerPerformance failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(re.search(r"([\d.]+) records/sec", final[-1]).group(1)) * size / 1e6


def consume_latencies(
    bootstrap: str,
    topics: list[str],
    expected: int | None,
    timeout: float,
    out,
    idle_s: float = 20.0,
    with_produced: bool = False,
    **config,
) -> None:
    """In its own process: read ``topics`` live and send back received-minus-produced milliseconds (the
    ``alertdist.produced_ms`` header; ``with_produced``: ``(produced_ms, latency_ms)`` pairs, to tell a warm-up
    from the measured part) and this process's CPU time. Stops after ``expected`` messages or, when that is unknown
    (a filter's output), after ``idle_s`` without one once something arrived; ``config``: consumer settings
    (``isolation.level="read_committed"`` for transactional outputs)."""
    from confluent_kafka import TopicPartition

    from alertdist.kafka.clients import consumer
    from alertdist.publish.publisher import HEADER_PRODUCED_MS

    c = consumer(bootstrap, **{"enable.partition.eof": False, "fetch.wait.max.ms": 100, **config})
    try:
        metadata = c.list_topics(timeout=30)
        c.assign([TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions])
        latencies, deadline, last = [], time.monotonic() + timeout, None
        out.put("ready")
        while (expected is None or len(latencies) < expected) and time.monotonic() < deadline:
            if expected is None and last is not None and time.monotonic() - last > idle_s:
                break
            for msg in c.consume(1000, 0.1):
                if msg.error():
                    continue
                received = time.time_ns() // 1_000_000
                produced = int(dict(msg.headers())[HEADER_PRODUCED_MS])
                latencies.append((produced, received - produced) if with_produced else received - produced)
                last = time.monotonic()
        out.put((latencies, cpu_seconds()))
    finally:
        c.close()
