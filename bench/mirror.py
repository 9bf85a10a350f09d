"""MirrorMaker 2's throughput against Kafka's own ConsumerPerformance, then its latency at a paced rate.

Two private brokers (producing and public), one run:
  (a) a programme topic is filled upstream with N records of the simulated packets' mean size
      (ProducerPerformance), then org.apache.kafka.tools.ConsumerPerformance reads it back: its fetch rate
      (joining the group excluded) is what one consumer of the producing cluster gets;
  (b) MirrorMaker 2, started with the project's own properties (dedicated mode, exactly-once source support),
      copies the same topic to the public cluster: its rate runs from the first record seen downstream to the
      moment the offset syncs show every partition's last record committed there (startup excluded).
  `mirror_vs_consumer` = (b) / (a), in MB/s of record values (1 MB = 1e6 bytes); target >= 0.7.
Latency: simulated packets published upstream at --rate alerts/minute (ZTF's 40,000 by default) for
--latency-seconds while the mirror runs, consumed live downstream (read_committed) in another process:
percentiles of (received downstream - `alertdist.produced_ms`); target p99 < 2000 ms.

Run from the repository root: .venv/bin/python bench/mirror.py [--alerts 20000] [--latency-seconds 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition

from _common import consume_latencies, java_producer_performance, java_tool, kafka_libs, private_broker, say
from alertdist.infra.kafka_local import free_port
from alertdist.kafka.clients import admin_client, consumer
from alertdist.mirror import process
from alertdist.mirror.config import MirrorSpec, mirrored_topics
from alertdist.mirror.syncs import mirror_lag, read_offset_syncs
from alertdist.nights.state import end_offsets
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, paced, simulated_alerts

NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 14
FILL, LIVE = TopicNaming(survey="fill"), TopicNaming(survey="live")


def consumer_rate(libs: Path, bootstrap: str, topic: str, n: int, size: int) -> float:
    """MB/s (1e6) of ConsumerPerformance's fetches (group join excluded) reading ``n`` records of ``topic``."""
    command = java_tool(libs, "ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic)
    done = subprocess.run([*command, "--messages", str(n), "--timeout", "60000"], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if re.match(r"\d{4}-", line)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"ConsumerPerformance failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(lines[-1].split(",")[-1]) * size / 1e6  # fetch.nMsg.sec


def _arrived(down, topic: str) -> int:
    """Records (and commit markers) written downstream to ``topic`` so far; 0 while it does not exist there. Asked
    of one consumer kept open (`nights.state.end_offsets` opens one per call, too much every 20 ms)."""
    found = down.list_topics(topic, timeout=2).topics.get(topic)
    if found is None or found.error is not None or len(found.partitions) < PARTITIONS:
        return 0
    try:
        return sum(down.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1] for p in range(PARTITIONS))
    except KafkaException:
        return 0  # just created: a partition's leader not known yet


def mirror_rate(downstream: str, topic: str, n: int, size: int, timeout: float = 900) -> tuple[float, list]:
    """MB/s (1e6) MirrorMaker 2 copies ``topic`` once warm: from the time 40 % of its ``n`` records had arrived
    downstream to the time 90 % had. The first 40 % carry the JVM's and Connect's start-up and the JIT compiling
    the copy path (a long-running mirror has done that long before a night); the last 10 % the final commit.
    ConsumerPerformance leaves out its group join likewise. Also the (seconds, arrived) samples."""
    down, deadline = consumer(downstream), time.monotonic() + timeout
    samples, started = [], time.monotonic()
    try:
        while time.monotonic() < deadline:
            arrived = _arrived(down, topic)
            samples.append((time.monotonic() - started, arrived))
            if arrived >= 0.9 * n:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"the mirror did not copy {topic} within {timeout:.0f} s")
    finally:
        down.close()
    t40, a40 = next((t, a) for t, a in samples if a >= 0.4 * n)
    t90, a90 = samples[-1]
    return (a90 - a40) * size / 1e6 / (t90 - t40), samples


def wait_synced(upstream: str, topic: str, timeout: float = 300) -> None:
    """Until the offset syncs show every partition's last upstream record committed downstream (not timed)."""
    ends, deadline = end_offsets(upstream, [topic]), time.monotonic() + timeout
    while mirror_lag(ends, read_offset_syncs(upstream)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the mirror did not commit all of {topic} downstream within {timeout:.0f} s")
        time.sleep(0.5)


def latency_run(upstream: str, downstream: str, packets: list[SourcePacket], rate: float, seconds: float) -> dict:
    """Percentiles of upstream production to downstream visibility at ``rate`` alerts/minute."""
    n = int(rate / 60 * seconds)
    topics = list(LIVE.programme_topics(NIGHT).values())
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    reader = context.Process(
        target=consume_latencies,
        args=(downstream, topics, n, seconds + 300, results),
        kwargs={"isolation.level": "read_committed"},
    )
    reader.start()
    if results.get(timeout=60) != "ready":
        raise RuntimeError("the latency consumer did not start")
    stream = paced(itertools.islice(itertools.cycle(packets), n), rate_per_minute=rate)
    publish(stream, bootstrap_servers=upstream, naming=LIVE, night=NIGHT)
    latencies, _ = results.get(timeout=seconds + 330)
    reader.join(30)
    if len(latencies) != n:
        raise RuntimeError(f"the downstream consumer received {len(latencies)} of {n} alerts")
    q = statistics.quantiles(sorted(latencies), n=100, method="inclusive")
    return {"alerts": n, "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": max(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000, help="records of the throughput run (default 20000)")
    parser.add_argument("--rate", type=float, default=40_000, help="alerts/minute of the latency run")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--tasks", type=int, default=MirrorSpec.tasks, help="MirrorMaker's tasks.max")
    parser.add_argument("--no-exactly-once", action="store_true", help="measure without exactly-once source support")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a MirrorMaker property to override"
    )
    args = parser.parse_args(argv)
    packets = [SourcePacket(f"{a.candid}.avro", a.packet, None) for a in simulated_alerts(2000, night=NIGHT, seed=1)]
    size = round(statistics.fmean(len(p.packet) for p in packets))
    libs, settings = kafka_libs(), TopicSettings(partitions=PARTITIONS)  # lz4, as a night's topics
    with private_broker("bench-mirror-up-") as up, private_broker("bench-mirror-down-") as down:
        upstream, downstream = up.bootstrap_servers, down.bootstrap_servers
        for naming in (FILL, LIVE):
            ensure_night_topics(admin_client(upstream), naming, NIGHT, settings)
        topic = FILL.programme_topic(NIGHT, 1)
        say(f"filling {topic} upstream with {args.alerts} records of {size:,} B ...")
        java_producer_performance(libs, upstream, topic, args.alerts, size, "lz4")  # as the publisher writes
        consumed = consumer_rate(libs, upstream, topic, args.alerts, size)
        say(f"(a) ConsumerPerformance upstream: {consumed:.1f} MB/s")
        with tempfile.TemporaryDirectory(prefix="bench-mirror-") as folder:
            home = process.MirrorHome(Path(folder), libs)
            topics = f"{mirrored_topics(FILL, NIGHT)}|{mirrored_topics(LIVE, NIGHT)}"
            overrides = dict(item.split("=", 1) for item in args.set)
            spec = MirrorSpec(
                upstream,
                downstream,
                topics,
                free_port(),
                tasks=args.tasks,
                exactly_once=not args.no_exactly_once,
                overrides=overrides,
            )
            process.start(home, spec)
            try:
                mirrored, _ = mirror_rate(downstream, topic, args.alerts, size)
                wait_synced(upstream, topic)
                say(
                    f"(b) MirrorMaker 2: {mirrored:.1f} MB/s, mirror_vs_consumer {mirrored / consumed:.2f} "
                    "(target >= 0.7)"
                )
                say(f"latency: {args.rate:,.0f} alerts/minute for {args.latency_seconds:.0f} s, read downstream ...")
                latency = latency_run(upstream, downstream, packets, args.rate, args.latency_seconds)
                say(f"  p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms (target p99 < 2000)")
            finally:
                process.stop(home)
    report = {
        "alerts": args.alerts,
        "tasks": args.tasks,
        "exactly_once": not args.no_exactly_once,
        "overrides": overrides,
        "record_size": size,
        "consumer_performance_mb_s": round(consumed, 1),
        "mirror_mb_s": round(mirrored, 1),
        "mirror_vs_consumer": round(mirrored / consumed, 3),
        "latency_rate_per_minute": args.rate,
        "mirror_p99_ms": latency["p99_ms"],
        **{f"latency_{k}": v for k, v in latency.items() if k != "p99_ms"},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
