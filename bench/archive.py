"""Alerts/s and peak memory of the end-of-night archiver, against Kafka's own ConsumerPerformance, same run.

Two simulated nights of real-size alerts (default 20,000 and 100,000) are published to a private Kafka broker
on free ports, then archived to a local folder by `alertdist archive` in a subprocess (tarballs + Parquet +
manifest + read-back verification, as in production). For each run: wall time, alerts/s and the archiver's
peak RSS (the child's ru_maxrss from wait4). Baseline: `org.apache.kafka.tools.ConsumerPerformance` reading
the same topics in the same run; the ratio archiver/ConsumerPerformance says how much of Kafka's raw read rate
the archive keeps. Best of `--rounds` counts for the rate, the largest for memory.

Simulating 100,000 alerts one by one would take ~10 minutes here, so a pool of `--pool` simulated alerts
(default 2,000) is repeated with fresh candids: each copy's candid (a fixed-width 9-byte varint in Avro) is
rewritten in place, so every alert is a real-size, valid, distinct packet.

Run from the repository root: .venv/bin/python bench/archive.py [--sizes 20000,100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alertdist.settings import Settings
from infra import kafka_local
from tasks import codec
from tasks.avro_container import zigzag_varint
from tasks.kafka_clients import admin_client, producer
from tasks.night_state import NightState, end_offsets, mark_night
from tasks.simulate import simulate_night
from tasks.topics import TopicNaming, TopicSettings, ensure_night_topics

REPO = Path(__file__).resolve().parents[1]
NIGHT = dt.date(2023, 10, 12)


def free_port_pair() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    continue


def alert_pool(size: int) -> list[bytes]:
    started = time.monotonic()
    pool = [a.packet for a in simulate_night(size, night=NIGHT, seed=42)]
    print(f"simulated a pool of {len(pool)} alerts in {time.monotonic() - started:.0f} s "
          f"(mean {sum(map(len, pool)) / len(pool) / 1024:.0f} KiB)", flush=True)
    return pool


def night_packets(pool: list[bytes], n: int, copy_base: int):
    """``n`` distinct packets: pool entries with candids moved by (copy number + copy_base) * 10^3."""
    for i in range(n):
        packet = pool[i % len(pool)]
        copy = i // len(pool) + copy_base
        if copy:
            candid = codec.peek(packet).candid
            old, new = zigzag_varint(candid), zigzag_varint(candid + copy * 1000)
            if len(old) != len(new) or packet.count(old) != 2:
                raise RuntimeError(f"cannot rewrite candid {candid} in place")
            packet = packet.replace(old, new)
        yield packet


def publish(bootstrap: str, naming: TopicNaming, packets) -> tuple[NightState, int]:
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=14))
    failures, count = [], 0
    p = producer(bootstrap)
    started = time.monotonic()
    for packet in packets:
        info = codec.peek(packet)
        headers = [("alertdist.produced_ms", str(int(time.time() * 1000)).encode()),
                   ("alertdist.published_ms", str(int(time.time() * 1000)).encode()),
                   ("alertdist.candid", str(info.candid).encode())]
        while True:
            try:
                p.produce(naming.programme_topic(NIGHT, info.programid), value=packet, key=info.objectId.encode(),
                          headers=headers, on_delivery=lambda err, msg: err and failures.append(err))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        count += 1
        if count % 10000 == 0:
            print(f"  published {count} ({count / (time.monotonic() - started):,.0f}/s)", flush=True)
    if p.flush(120) or failures:
        raise RuntimeError(f"publishing failed: {failures[:3]}")
    topics = list(naming.programme_topics(NIGHT).values())
    state = NightState(f"{NIGHT:%Y%m%d}", "closed", end_offsets(bootstrap, topics))
    mark_night(bootstrap, naming, state)
    return state, count


def run_archiver(bootstrap: str, naming: TopicNaming, dest: Path, work: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, its summary line) of one `alertdist archive` subprocess."""
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": bootstrap, "ALERTDIST_SURVEY": naming.survey}
    command = [sys.executable, "-m", "alertdist.cli", "archive", "--night", f"{NIGHT:%Y%m%d}", "--dest", str(dest),
               "--work-dir", str(work), "--quiet"]
    started = time.monotonic()
    with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"archiver failed: {(work / 'stderr').read_text()[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024, (work / "stdout").read_text().strip().splitlines()[-1]


def consumer_performance(bootstrap: str, libs: Path, topics: list[str], messages: dict[str, int]) -> float:
    """Kafka's own ConsumerPerformance: messages/s reading ``topics`` one after another."""
    total_messages, total_seconds = 0, 0.0
    for topic in topics:
        if not messages[topic]:
            continue
        result = subprocess.run(
            ["java", "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ConsumerPerformance",
             "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages[topic]),
             "--timeout", "60000", "--hide-header", "--fetch-size", str(16 * 1024 * 1024)],
            capture_output=True, text=True, check=True)
        fields = [f.strip() for f in result.stdout.strip().splitlines()[-1].split(",")]
        consumed, rate = int(fields[4]), float(fields[5])
        total_messages += consumed
        total_seconds += consumed / rate
    return total_messages / total_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000", help="night sizes in alerts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="archiver runs per night (best rate counts)")
    parser.add_argument("--pool", type=int, default=2000, help="simulated alerts to build the nights from")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    libs = Settings.from_env().kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="alertdist-bench-archive-") as tmp:
        folder = Path(tmp)
        (folder / "kafka").mkdir()
        (folder / "kafka" / "libs").symlink_to(libs, target_is_directory=True)
        port = free_port_pair()
        cluster = kafka_local.KafkaCluster(home=folder / "kafka", brokers=1, port=port, controller_port=port + 10000,
                                           heap="1g")
        kafka_local.start(cluster, log=lambda *_: None)
        print(f"Kafka on {cluster.bootstrap_servers}", flush=True)
        try:
            pool = alert_pool(args.pool)
            figures = {}
            for index, size in enumerate(sizes):
                naming = TopicNaming(survey=f"bench{size}")
                state, count = publish(cluster.bootstrap_servers, naming,
                                       night_packets(pool, size, copy_base=index * 1000))
                print(f"night of {count} alerts published and closed", flush=True)
                topics = list(naming.programme_topics(NIGHT).values())
                kafka_rate = consumer_performance(cluster.bootstrap_servers, libs, topics,
                                                  {t: sum(state.end_offsets[t].values()) for t in topics})
                print(f"  ConsumerPerformance: {kafka_rate:,.0f} msgs/s", flush=True)
                runs = []
                for round_ in range(args.rounds):
                    work = folder / f"work-{size}-{round_}"
                    work.mkdir()
                    elapsed, rss, summary = run_archiver(cluster.bootstrap_servers, naming, folder / f"out-{size}",
                                                         work)
                    runs.append((count / elapsed, rss))
                    print(f"  archive round {round_ + 1}: {elapsed:.1f} s, {count / elapsed:,.0f} alerts/s, "
                          f"peak RSS {rss / 2**20:,.0f} MiB | {summary}", flush=True)
                best = max(r for r, _ in runs)
                figures[size] = {"alerts": count, "alerts_per_s": round(best), "peak_rss_mib": round(
                    max(m for _, m in runs) / 2**20), "consumer_performance_msgs_per_s": round(kafka_rate),
                    "ratio_to_consumer_performance": round(best / kafka_rate, 3),
                    "rounds_alerts_per_s": [round(r) for r, _ in runs]}
        finally:
            kafka_local.stop(cluster, log=lambda *_: None)
    small, large = figures[sizes[0]], figures[sizes[-1]]
    result = {
        "bench": "archive", "sizes": sizes, "nights": {str(k): v for k, v in figures.items()},
        "min_alerts_per_s": min(f["alerts_per_s"] for f in figures.values()),
        "rss_ratio_large_to_small": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "targets": {"alerts_per_s": 2000, "rss_ratio": 1.2},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
