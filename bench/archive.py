"""Alerts/s, CPU per alert and peak memory of the end-of-night archiver, against Kafka's own ConsumerPerformance.

Two simulated nights of real-size alerts (default 20,000 and 100,000) are published to a private Kafka broker
on free ports, then archived to a local folder by `alertdist archive` in a subprocess (tarballs + Parquet +
manifest + read-back verification, as in production). For each run: wall time, alerts/s, the archiver's peak
RSS and CPU time (ru_maxrss, ru_utime + ru_stime of the child from wait4) and the broker's CPU time over the run
(from /proc). Baseline: `org.apache.kafka.tools.ConsumerPerformance` reading the same topics in the same run
(rate, its own CPU and the broker's); the ratio archiver/ConsumerPerformance says how much of Kafka's raw read
rate the archive keeps. Each round runs ConsumerPerformance then the archiver, so a ratio compares runs under
the same load; each run starts once the broker is idle, and each archiver run writes to an empty folder. Best of
`--rounds` counts for rates and ratios, the largest for memory. On a machine shared with
other work, wall-clock rates follow the load (recorded in the JSON); CPU milliseconds per alert do not.

Each night is simulated whole (`alertdist.simulate.night.simulate_night`, ~1 ms of CPU per alert) once and cached in
.alertdist/bench/ (a length-prefixed packet file, keyed by size, seed and the simulator's source), so re-runs
publish straight from disk. `--pool N` instead repeats N simulated alerts with fresh candids (quicker to make;
the stamps then repeat more than in a real night).

Run from the repository root: .venv/bin/python bench/archive.py [--sizes 20000,100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from _common import cpu_seconds, java_tool, start_cluster
from alertdist import simulate
from alertdist.avro import codec
from alertdist.avro.container import zigzag_varint
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client
from alertdist.kafka.producer import CountingProducer
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import HEADER_CANDID, HEADER_PRODUCED_MS, HEADER_PUBLISHED_MS
from alertdist.settings import Settings
from alertdist.simulate.night import simulate_night

REPO = Path(__file__).resolve().parents[1]

NIGHT = dt.date(2023, 10, 12)
SEED = 42
_LENGTH = struct.Struct("<I")


# --------------------------------------------------------------------------------------------- the nights


def _simulator_key() -> str:
    """Changes when the simulator (or the stamps it draws) changes, so a stale cache is never used."""
    digest = hashlib.sha256()
    for path in sorted(Path(simulate.__file__).parent.glob("*.py")):  # every module of alertdist.simulate
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_night(size: int, folder: Path) -> Path:
    """The packets of a simulated night of ``size`` alerts, made once and kept (written atomically)."""
    path = folder / f"archive-night-{size}-seed{SEED}-{_simulator_key()}.packets"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp-{os.getpid()}")
    started, made = time.monotonic(), 0
    with open(temporary, "wb") as out:
        for alert in simulate_night(size, night=NIGHT, seed=SEED):
            out.write(_LENGTH.pack(len(alert.packet)) + alert.packet)
            made += 1
            if made % 10000 == 0:
                print(f"  simulated {made}/{size} ({made / (time.monotonic() - started):,.0f}/s)", flush=True)
    os.replace(temporary, path)
    print(f"simulated a night of {size} alerts in {time.monotonic() - started:.0f} s -> {path}", flush=True)
    return path


def read_night(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=8 * 1024 * 1024) as f:
        while header := f.read(_LENGTH.size):
            yield f.read(_LENGTH.unpack(header)[0])


def pool_night(pool: list[bytes], n: int) -> Iterator[bytes]:
    """``n`` distinct packets: pool entries with candids moved by (copy number) * 10^3, rewritten in place."""
    for i in range(n):
        packet = pool[i % len(pool)]
        copy = i // len(pool)
        if copy:
            candid = codec.peek(packet).candid
            old, new = zigzag_varint(candid), zigzag_varint(candid + copy * 1000)
            if len(old) != len(new) or packet.count(old) != 2:
                raise RuntimeError(f"cannot rewrite candid {candid} in place")
            packet = packet.replace(old, new)
        yield packet


# ------------------------------------------------------------------------------------------------ running


def publish(bootstrap: str, naming: TopicNaming, packets: Iterable[bytes]) -> tuple[NightState, int]:
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=14))
    out, count = CountingProducer(bootstrap), 0
    started = time.monotonic()
    for packet in packets:
        info = codec.peek(packet)
        now = b"%d" % (time.time_ns() // 1_000_000)
        headers = [(HEADER_PRODUCED_MS, now), (HEADER_PUBLISHED_MS, now), (HEADER_CANDID, b"%d" % info.candid)]
        out.produce(naming.programme_topic(NIGHT, info.programid), packet, info.objectId.encode(), headers)
        count += 1
        if count % 20000 == 0:
            print(f"  published {count} ({count / (time.monotonic() - started):,.0f}/s)", flush=True)
    out.finish(120, unit="packet")
    topics = list(naming.programme_topics(NIGHT).values())
    state = NightState(f"{NIGHT:%Y%m%d}", "closed", end_offsets(bootstrap, topics))
    mark_night(bootstrap, naming, state)
    return state, count


def wait_until_idle(pid: int, *, below: float = 0.05, timeout: float = 30.0) -> None:
    """Wait until the broker uses under ``below`` of a core for a second: after ConsumerPerformance it keeps
    working for seconds (its group leaving, offsets written), which would be charged to the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < below:
            return


def run_child(command: list[str], work: Path, env: dict | None = None) -> tuple[float, resource.struct_rusage]:
    """(wall seconds, rusage) of one child process; its output goes to ``work``."""
    started = time.monotonic()
    with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{command[0]} failed: {(work / 'stderr').read_text()[-2000:]}")
    return elapsed, usage


def run_archiver(
    bootstrap: str, naming: TopicNaming, dest: Path, work: Path
) -> tuple[float, resource.struct_rusage, str]:
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": bootstrap, "ALERTDIST_SURVEY": naming.survey}
    archive = ["archive", "--night", f"{NIGHT:%Y%m%d}", "--dest", str(dest), "--work-dir", str(work), "--quiet"]
    elapsed, usage = run_child([sys.executable, "-m", "alertdist.cli.main", *archive], work, env)
    return elapsed, usage, (work / "stdout").read_text().strip().splitlines()[-1]


def consumer_performance(
    bootstrap: str, libs: Path, topics: list[str], messages: dict[str, int], work: Path
) -> tuple[float, float]:
    """Kafka's own ConsumerPerformance reading ``topics`` one after another: (messages/s, CPU seconds)."""
    total_messages, total_seconds, cpu = 0, 0.0, 0.0
    for topic in topics:
        if not messages[topic]:
            continue
        fetch = str(16 * 1024 * 1024)
        where = ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages[topic])]
        command = java_tool(
            libs, "ConsumerPerformance", *where, "--timeout", "60000", "--hide-header", "--fetch-size", fetch
        )
        _, usage = run_child(command, work)
        fields = [f.strip() for f in (work / "stdout").read_text().strip().splitlines()[-1].split(",")]
        consumed, rate = int(fields[4]), float(fields[5])
        total_messages += consumed
        total_seconds += consumed / rate
        cpu += usage.ru_utime + usage.ru_stime
    return total_messages / total_seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000", help="night sizes in alerts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="archiver runs per night (best rate counts)")
    parser.add_argument(
        "--pool", type=int, default=0, help="repeat N simulated alerts instead of simulating whole nights"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = Settings.from_env()
    libs = settings.kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    if args.pool:
        pool = [a.packet for a in simulate_night(args.pool, night=NIGHT, seed=SEED)]
        nights = {size: (lambda size=size: pool_night(pool, size)) for size in sizes}
    else:
        nights = {size: (lambda path=cached_night(size, settings.home / "bench"): read_night(path)) for size in sizes}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="alertdist-bench-archive-") as tmp:
        folder = Path(tmp)
        cluster = start_cluster(folder / "kafka", heap="1g")
        broker_pid = kafka_local.status(cluster)[0].pid
        print(f"Kafka on {cluster.bootstrap_servers}", flush=True)
        try:
            figures = {}
            for size in sizes:
                naming = TopicNaming(survey=f"bench{size}")
                state, count = publish(cluster.bootstrap_servers, naming, nights[size]())
                print(f"night of {count} alerts published and closed", flush=True)
                topics = list(naming.programme_topics(NIGHT).values())
                messages = {t: sum(state.end_offsets[t].values()) for t in topics}
                runs = []
                for round_ in range(args.rounds):  # each round: Kafka's consumer, then the archiver, same load
                    work = folder / f"cp-{size}-{round_}"
                    work.mkdir()
                    wait_until_idle(broker_pid)
                    broker_before = cpu_seconds(broker_pid)
                    kafka_rate, kafka_cpu = consumer_performance(
                        cluster.bootstrap_servers, libs, topics, messages, work
                    )
                    kafka_broker_ms = (cpu_seconds(broker_pid) - broker_before) / count * 1e3
                    print(
                        f"  round {round_ + 1}: ConsumerPerformance {kafka_rate:,.0f} msgs/s, CPU "
                        f"{kafka_cpu / count * 1e3:.3f} ms/msg (+ broker {kafka_broker_ms:.3f})",
                        flush=True,
                    )
                    work = folder / f"work-{size}-{round_}"
                    work.mkdir()
                    shutil.rmtree(folder / f"out-{size}", ignore_errors=True)  # every round archives afresh
                    wait_until_idle(broker_pid)
                    broker_before = cpu_seconds(broker_pid)
                    elapsed, usage, summary = run_archiver(
                        cluster.bootstrap_servers, naming, folder / f"out-{size}", work
                    )
                    shutil.rmtree(work, ignore_errors=True)
                    broker_ms = (cpu_seconds(broker_pid) - broker_before) / count * 1e3
                    cpu_ms = (usage.ru_utime + usage.ru_stime) / count * 1e3
                    runs.append(
                        {
                            "alerts_per_s": count / elapsed,
                            "rss": usage.ru_maxrss * 1024,
                            "cpu_ms": cpu_ms,
                            "broker_ms": broker_ms,
                            "load": os.getloadavg()[0],
                            "kafka_rate": kafka_rate,
                            "kafka_cpu_ms": kafka_cpu / count * 1e3,
                            "kafka_broker_ms": kafka_broker_ms,
                            "ratio": count / elapsed / kafka_rate,
                        }
                    )
                    print(
                        f"  round {round_ + 1}: archive {elapsed:.1f} s, {count / elapsed:,.0f} alerts/s "
                        f"({runs[-1]['ratio']:.2f} x ConsumerPerformance), CPU {cpu_ms:.3f} ms/alert (+ broker "
                        f"{broker_ms:.3f}), peak RSS {usage.ru_maxrss / 1024:,.0f} MiB, load {runs[-1]['load']:.1f}"
                        f" | {summary}",
                        flush=True,
                    )
                best = max(runs, key=lambda r: r["alerts_per_s"])
                figures[size] = {
                    "alerts": count,
                    "alerts_per_s": round(best["alerts_per_s"]),
                    "peak_rss_mib": round(max(r["rss"] for r in runs) / 2**20),
                    "cpu_ms_per_alert": round(min(r["cpu_ms"] for r in runs), 3),
                    "broker_cpu_ms_per_alert": round(min(r["broker_ms"] for r in runs), 3),
                    "consumer_performance_msgs_per_s": round(max(r["kafka_rate"] for r in runs)),
                    "consumer_performance_cpu_ms_per_msg": round(min(r["kafka_cpu_ms"] for r in runs), 3),
                    "consumer_performance_broker_cpu_ms_per_msg": round(min(r["kafka_broker_ms"] for r in runs), 3),
                    "ratio_to_consumer_performance": round(max(r["ratio"] for r in runs), 3),
                    "rounds_alerts_per_s": [round(r["alerts_per_s"]) for r in runs],
                    "rounds_consumer_performance_msgs_per_s": [round(r["kafka_rate"]) for r in runs],
                    "rounds_load_average": [round(r["load"], 1) for r in runs],
                }
        finally:
            kafka_local.stop(cluster, log=lambda *_: None)
    small, large = figures[sizes[0]], figures[sizes[-1]]
    result = {
        "bench": "archive",
        "sizes": sizes,
        "nights": {str(k): v for k, v in figures.items()},
        "min_alerts_per_s": min(f["alerts_per_s"] for f in figures.values()),
        "rss_ratio_large_to_small": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "targets": {"alerts_per_s": 2000, "rss_ratio": 1.2},
        "load_average_before": round(load_before, 1),
        "load_average_after": round(os.getloadavg()[0], 1),
        "night_source": f"pool of {args.pool}" if args.pool else "simulated whole, cached",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
