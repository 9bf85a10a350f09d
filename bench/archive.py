"""Alerts/s, CPU per alert and peak memory of the end-of-night archiver, as a command and as a Prefect flow,
against Kafka's own ConsumerPerformance.

Two simulated nights of real-size alerts (default 20,000 and 100,000) are published to a private Kafka broker
on free ports, then archived to a local folder twice per round, each in a subprocess (tarballs + Parquet +
manifest + read-back verification, as in production): by `alertdist archive`, and by the archive-at-dawn
deployment's flow, `alertdist.flows.archive_night.archive_night`, reporting to a Prefect server the script
starts in its scratch folder on a free port. For each run: wall time of the whole child process (start-up
included), alerts/s, its peak RSS and CPU time (ru_maxrss, ru_utime + ru_stime of the child from wait4), and the
broker's and the Prefect server's CPU time over the run (from /proc). Both run the same pipelined archiver; what
the flow pays on top: importing Prefect (~1 s), registering the flow run and its task run with the server and
their state changes, the progress artifact and its updates, the summary table artifact, run logs shipped to the
API, the task's input hashing, and at the end the join of Prefect's flow-run heartbeat thread (it sleeps in 1 s
steps: up to 1 s); the child also exits only once those are sent. `flow_vs_cli` is the best flow rate over the
best CLI rate (target >= 0.9); `flow_vs_cli_median_of_rounds` the median of each round's flow/CLI ratio.
Baseline: `org.apache.kafka.tools.ConsumerPerformance` reading the same topics in the same run (rate, its own
CPU and the broker's); the ratio archiver/ConsumerPerformance says how much of Kafka's raw read rate the archive
keeps. Each round runs ConsumerPerformance, then the CLI and the flow (in turn first: the second run of a round
would otherwise always inherit the first's page-cache and disk state), so a ratio compares runs under the same
load; each archiver run starts once the previous run's files are synced to disk and the broker is idle, and
writes to an empty folder. Best of `--rounds` counts
for rates and ratios, the largest for memory. On a machine shared with other work, wall-clock rates follow the
load (recorded in the JSON); CPU milliseconds per alert do not.

Each night is simulated whole (`alertdist.simulate.night.simulate_night`, ~1 ms of CPU per alert) once and cached in
.alertdist/bench/ (a length-prefixed packet file, keyed by size, seed and the simulator's source), so re-runs
publish straight from disk. `--pool N` instead repeats N simulated alerts with fresh candids (quicker to make;
the stamps then repeat more than in a real night).

Run from the repository root: .venv/bin/python bench/archive.py [--sizes 20000,100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from _common import cpu_seconds, java_tool, start_cluster
from alertdist import simulate
from alertdist.avro import codec
from alertdist.avro.container import zigzag_varint
from alertdist.infra import kafka_local, prefect_local
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


#: The archive-at-dawn deployment's flow, called as its worker's process calls it: parameters as text.
FLOW_CALL = (
    "import json; from alertdist.flows.archive_night import archive_night; "
    "print(json.dumps(archive_night(night={night!r}, dest={dest!r}, work_dir={work!r})))"
)


def run_archiver(
    bootstrap: str, naming: TopicNaming, dest: Path, work: Path, prefect: prefect_local.PrefectServer | None = None
) -> tuple[float, resource.struct_rusage, str]:
    """`alertdist archive`, or with ``prefect`` the `archive_night` flow reporting to that server."""
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": bootstrap, "ALERTDIST_SURVEY": naming.survey}
    night = f"{NIGHT:%Y%m%d}"
    if prefect is None:
        archive = ["archive", "--night", night, "--dest", str(dest), "--work-dir", str(work), "--quiet"]
        command = ["-m", "alertdist.cli.main", *archive]
    else:
        env.update(prefect.client_env())
        command = ["-c", FLOW_CALL.format(night=night, dest=str(dest), work=str(work))]
    elapsed, usage = run_child([sys.executable, *command], work, env)
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


def measure(
    run: Callable[[Path, Path], tuple[float, resource.struct_rusage, str]],
    out: Path,
    work: Path,
    count: int,
    pids: dict[str, int],
) -> dict:
    """One archiver run into an empty ``out``, started once the broker is idle: its rates and the CPU the broker
    and the Prefect server spent meanwhile (per alert)."""
    work.mkdir()
    shutil.rmtree(out, ignore_errors=True)  # every run archives afresh
    os.sync()  # the previous run's written files go to disk now, not during this run
    wait_until_idle(pids["broker"])
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    elapsed, usage, summary = run(out, work)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "elapsed": elapsed,
        "alerts_per_s": count / elapsed,
        "rss": usage.ru_maxrss * 1024,
        "cpu_ms": (usage.ru_utime + usage.ru_stime) / count * 1e3,
        "cores": (usage.ru_utime + usage.ru_stime) / elapsed,  # how much of the machine's cores it kept busy
        **{f"{name}_ms": (cpu_seconds(pid) - before[name]) / count * 1e3 for name, pid in pids.items()},
        "load": os.getloadavg()[0],
        "summary": summary,
    }


def best_of(runs: list[dict]) -> dict:
    """The best rate, the largest memory and the least CPU of ``runs``."""
    return {
        "alerts_per_s": round(max(r["alerts_per_s"] for r in runs)),
        "peak_rss_mib": round(max(r["rss"] for r in runs) / 2**20),
        "cpu_ms_per_alert": round(min(r["cpu_ms"] for r in runs), 3),
        "cores_used": round(max(r["cores"] for r in runs), 2),
        "broker_cpu_ms_per_alert": round(min(r["broker_ms"] for r in runs), 3),
        "prefect_server_cpu_ms_per_alert": round(min(r["prefect_ms"] for r in runs), 3),
        "rounds_alerts_per_s": [round(r["alerts_per_s"]) for r in runs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000", help="night sizes in alerts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="archiver runs per night (best rate counts)")
    parser.add_argument(
        "--pool", type=int, default=0, help="repeat N simulated alerts instead of simulating whole nights"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = Settings.load()
    libs = settings.kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    if args.pool:
        pool = [a.packet for a in simulate_night(args.pool, night=NIGHT, seed=SEED)]
        nights = {size: (lambda size=size: pool_night(pool, size)) for size in sizes}
    else:
        nights = {size: functools.partial(read_night, cached_night(size, settings.home / "bench")) for size in sizes}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="alertdist-bench-archive-") as tmp:
        folder = Path(tmp)
        cluster = start_cluster(folder / "kafka", heap="1g")
        prefect = prefect_local.PrefectServer(home=folder / "prefect", port=kafka_local.free_port())
        bootstrap = cluster.bootstrap_servers
        try:
            prefect_local.start(prefect, log=lambda *_: None)
            pids = {"broker": kafka_local.status(cluster)[0].pid, "prefect": int(prefect.pid_file.read_text())}
            print(f"Kafka on {bootstrap}, Prefect server on {prefect.api_url}", flush=True)
            figures = {}
            for size in sizes:
                naming = TopicNaming(survey=f"bench{size}")
                state, count = publish(bootstrap, naming, nights[size]())
                print(f"night of {count} alerts published and closed", flush=True)
                topics = list(naming.programme_topics(NIGHT).values())
                messages = {t: sum(state.end_offsets[t].values()) for t in topics}
                runs = []
                for round_ in range(args.rounds):  # each round: Kafka's consumer, the CLI, the flow, same load
                    work = folder / f"cp-{size}-{round_}"
                    work.mkdir()
                    wait_until_idle(pids["broker"])
                    broker_before = cpu_seconds(pids["broker"])
                    kafka_rate, kafka_cpu = consumer_performance(bootstrap, libs, topics, messages, work)
                    kafka_broker_ms = (cpu_seconds(pids["broker"]) - broker_before) / count * 1e3
                    print(
                        f"  round {round_ + 1}: ConsumerPerformance {kafka_rate:,.0f} msgs/s, CPU "
                        f"{kafka_cpu / count * 1e3:.3f} ms/msg (+ broker {kafka_broker_ms:.3f})",
                        flush=True,
                    )
                    run = {
                        "kafka_rate": kafka_rate,
                        "kafka_cpu_ms": kafka_cpu / count * 1e3,
                        "kafka_broker_ms": kafka_broker_ms,
                    }
                    kinds = [("cli", None), ("flow", prefect)]
                    for kind, server in kinds if round_ % 2 == 0 else kinds[::-1]:  # neither always goes second
                        run[kind] = r = measure(
                            functools.partial(run_archiver, bootstrap, naming, prefect=server),
                            folder / f"out-{size}",
                            folder / f"{kind}-{size}-{round_}",
                            count,
                            pids,
                        )
                        print(
                            f"  round {round_ + 1}: {kind} {r['elapsed']:.1f} s, {r['alerts_per_s']:,.0f} alerts/s "
                            f"({r['alerts_per_s'] / kafka_rate:.2f} x ConsumerPerformance), CPU {r['cpu_ms']:.3f} "
                            f"ms/alert (+ broker {r['broker_ms']:.3f}, Prefect server {r['prefect_ms']:.3f}), peak "
                            f"RSS {r['rss'] / 2**20:,.0f} MiB, load {r['load']:.1f} | {r['summary'][-300:]}",
                            flush=True,
                        )
                    runs.append(run)
                cli, flow = best_of([r["cli"] for r in runs]), best_of([r["flow"] for r in runs])
                figures[size] = {
                    "alerts": count,
                    **cli,
                    "consumer_performance_msgs_per_s": round(max(r["kafka_rate"] for r in runs)),
                    "consumer_performance_cpu_ms_per_msg": round(min(r["kafka_cpu_ms"] for r in runs), 3),
                    "consumer_performance_broker_cpu_ms_per_msg": round(min(r["kafka_broker_ms"] for r in runs), 3),
                    "ratio_to_consumer_performance": round(
                        max(r["cli"]["alerts_per_s"] / r["kafka_rate"] for r in runs), 3
                    ),
                    "rounds_consumer_performance_msgs_per_s": [round(r["kafka_rate"]) for r in runs],
                    "rounds_load_average": [round(r["cli"]["load"], 1) for r in runs],
                    "flow": flow,
                    "flow_vs_cli": round(flow["alerts_per_s"] / cli["alerts_per_s"], 3),
                    "flow_vs_cli_rounds": [
                        round(r["flow"]["alerts_per_s"] / r["cli"]["alerts_per_s"], 3) for r in runs
                    ],
                }
        finally:
            prefect_local.stop(prefect, log=lambda *_: None)
            kafka_local.stop(cluster, log=lambda *_: None)
    small, large = figures[sizes[0]], figures[sizes[-1]]
    result = {
        "bench": "archive",
        "sizes": sizes,
        "nights": {str(k): v for k, v in figures.items()},
        "min_alerts_per_s": min(f["alerts_per_s"] for f in figures.values()),
        # the largest night's (issue 28: >= 0.7 on the 100,000-alert night), and the cores the archiver used there
        "ratio_to_consumer_performance": large["ratio_to_consumer_performance"],
        "cores_used": large["cores_used"],
        "rss_ratio_large_to_small": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "flow_vs_cli": min(f["flow_vs_cli"] for f in figures.values()),
        # the same, round by round (each round's flow against its own CLI run), the median: one lucky CLI round
        # cannot set it
        "flow_vs_cli_median_of_rounds": min(statistics.median(f["flow_vs_cli_rounds"]) for f in figures.values()),
        "targets": {"alerts_per_s": 2000, "rss_ratio": 1.2, "flow_vs_cli": 0.9},
        "load_average_before": round(load_before, 1),
        "load_average_after": round(os.getloadavg()[0], 1),
        "night_source": f"pool of {args.pool}" if args.pool else "simulated whole, cached",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
