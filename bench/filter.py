"""Alerts/s of a filter on a live broker: the naive loop, the project's runner, and Kafka's own consumer (ceiling).

One run starts its own single-node Kafka on free ports, publishes a simulated night of real-size alerts (~78 KB,
all in programme 1's topic, 14 partitions, lz4, as the publisher writes them) and closes the night. Then, round
by round so machine load hits all three alike, each reads that same topic from the start with a fresh group:
  naive    confluent_kafka consumer, next(fastavro.reader(BytesIO(value))) per message, the bright-transient
           cut in Python, passing alerts produced with a plain producer (capped at --naive-messages: it is slow)
  runner   alertdist.filters.live.run_live with the bundled bright_transients filter: projection decode of
           objectId+candidate, outputs and offsets committed in Kafka transactions
  ceiling  org.apache.kafka.tools.ConsumerPerformance --messages N (Java; reads, decodes nothing)
Rates count the time alerts flowed (first message to last one handled; for the runner, to its last commit;
for Kafka's tool, its fetch.nMsg.sec), so start-up and group joins are left out of all three alike. As in the
other benchmarks the best round of each counts (the least disturbed by other work on this shared machine); the
medians are printed too, and the runner's end-to-end rate (start-up and end-of-night detection included).
Metrics cost: --metrics-rounds (>= 3) interleaved pairs of runner rounds, metrics off then on; `metrics_overhead`
is the median over the pairs of 1 - (rate on / rate off) (target <= 0.03). The runner has no paced mode here
(bench/publish.py and bench/night.py report paced latency with metrics on and off).
The last line printed is one JSON object with the three rates and both ratios.

Run from the repository root: .venv/bin/python bench/filter.py [--alerts 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fastavro
from confluent_kafka import Consumer, KafkaError, Producer

from _common import java_tool, kafka_libs, start_cluster
from _metrics import check_pairs, cpu_overhead, metrics, overhead
from alertdist.avro import codec
from alertdist.filters.bundled import bright_transients
from alertdist.filters.live import LiveOptions, run_live
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client, producer
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics
from alertdist.simulate.night import simulate_night

NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 14


def publish_night(bootstrap: str, naming: TopicNaming, n_alerts: int, seed: int) -> tuple[str, int, float]:
    """Simulate and publish the night into programme 1's topic, close it; returns (topic, messages, MB)."""
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    topic = naming.programme_topic(NIGHT, 1)
    failures: list = []
    p = producer(bootstrap)
    sent, size, started = 0, 0, time.monotonic()
    for alert in simulate_night(n_alerts, night=NIGHT, seed=seed, programme_weights={1: 1.0}):
        now = str(int(time.time() * 1000)).encode()
        while True:
            try:
                p.produce(
                    topic,
                    alert.packet,
                    key=codec.peek(alert.packet).objectId.encode(),
                    headers=[
                        ("alertdist.produced_ms", now),
                        ("alertdist.published_ms", now),
                        ("alertdist.candid", str(alert.candid).encode()),
                    ],
                    on_delivery=lambda err, msg: err and failures.append(err),
                )
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        sent += 1
        size += len(alert.packet)
        if sent % 2000 == 0:
            print(f"  published {sent}/{n_alerts} ({time.monotonic() - started:.0f} s)", flush=True)
    left = p.flush(60)
    if left or failures:
        raise RuntimeError(f"publishing the benchmark night failed: {left} unacknowledged, {failures[:1]}")
    mark_night(
        bootstrap,
        naming,
        NightState(f"{NIGHT:%Y%m%d}", "closed", end_offsets(bootstrap, list(naming.programme_topics(NIGHT).values()))),
    )
    return topic, sent, size / 1e6


def naive(bootstrap: str, topic: str, limit: int, group: str) -> tuple[int, float]:
    """What a ZTF consumer typically writes: decode everything, every message re-parsing the embedded schema."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    p = Producer({"bootstrap.servers": bootstrap})
    c.subscribe([topic])
    n, at_end, started = 0, set(), None
    try:
        while n < limit and len(at_end) < PARTITIONS:
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"naive consumer: {msg.error().str()}")
                at_end.add(msg.partition())
                continue
            if started is None:
                started = time.perf_counter()
            record = next(fastavro.reader(io.BytesIO(msg.value())))
            if bright_transients(record):
                p.produce(f"{topic}_naive", msg.value(), key=msg.key())
                p.poll(0)
            n += 1
        elapsed = time.perf_counter() - started
    finally:
        c.close()
    if p.flush(30):
        raise RuntimeError("naive loop: outputs left unacknowledged")
    return n, elapsed


def runner(bootstrap: str, naming: TopicNaming, group: str):
    report = run_live(
        "bright_transients",
        NIGHT,
        bootstrap_servers=bootstrap,
        naming=naming,
        programmes=[1],
        options=LiveOptions(state_poll_s=0.2, done_check_s=0.1),
        group_id=group,
    )
    if report.status != "finished" or report.lag != 0:
        raise RuntimeError(f"the runner did not finish the night: {report}")
    return report


def ceiling(libs: Path, bootstrap: str, topic: str, messages: int, group: str) -> tuple[float, float]:
    """Kafka's own consumer: (fetch.nMsg.sec, nMsg.sec including its group join)."""
    where = ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages)]
    command = java_tool(libs, "ConsumerPerformance", *where, "--timeout", "60000", "--group", group)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"ConsumerPerformance failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    row = dict(zip([h.strip() for h in lines[-2].split(",")], [v.strip() for v in lines[-1].split(",")]))
    if int(row["data.consumed.in.nMsg"]) < messages:
        raise RuntimeError(f"ConsumerPerformance read only {row['data.consumed.in.nMsg']} of {messages}")
    return float(row["fetch.nMsg.sec"]), float(row["nMsg.sec"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts in the simulated night (default 20000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--naive-messages",
        type=int,
        default=3_000,
        help="messages the naive loop reads per round (it runs at a few hundred per second)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        default=3,
        help="pairs of runner rounds, metrics off/on (>= 3; the median pair counts)",
    )
    args = parser.parse_args(argv)
    check_pairs(parser, args.metrics_rounds)

    libs = kafka_libs()
    folder = Path(tempfile.mkdtemp(prefix="alertdist-bench-filter-"))
    cluster = start_cluster(folder / "kafka", heap="1g")
    try:
        bootstrap = cluster.bootstrap_servers
        naming = TopicNaming(survey="bench")
        print(f"broker {bootstrap}; publishing a simulated night of {args.alerts} alerts", flush=True)
        topic, total, megabytes = publish_night(bootstrap, naming, args.alerts, args.seed)
        print(
            f"published {total} alerts, {megabytes:.0f} MB ({megabytes * 1e6 / total / 1e3:.0f} KB each) into {topic}",
            flush=True,
        )
        create_topics(admin_client(bootstrap), {f"{topic}_naive": (PARTITIONS, 1, {})})
        rates = {"naive": [], "runner": [], "ceiling": []}
        for r in range(1, args.rounds + 1):
            n, seconds = naive(bootstrap, topic, args.naive_messages, f"bench-naive-{r}")
            rates["naive"].append(n / seconds)
            report = runner(bootstrap, naming, f"bench-runner-{r}")
            rates["runner"].append(report.processing_rate)
            fetch_rate, overall_rate = ceiling(libs, bootstrap, topic, total, f"bench-ceiling-{r}")
            rates["ceiling"].append(fetch_rate)
            print(
                f"round {r}: naive {rates['naive'][-1]:,.0f}/s ({n} alerts); runner "
                f"{report.processing_rate:,.0f}/s ({report.read} alerts, {report.passed} passed, "
                f"{report.transactions} transactions; end to end {report.rate:,.0f}/s in {report.elapsed_s:.1f} s); "
                f"ceiling {fetch_rate:,.0f}/s (with its group join {overall_rate:,.0f}/s)",
                flush=True,
            )
        metrics_rates, metrics_cpu = {False: [], True: []}, {False: [], True: []}  # metrics off, then on
        for r in range(1, args.metrics_rounds + 1):
            for on in (False, True):
                with metrics(on) as cost:
                    metrics_rates[on].append(runner(bootstrap, naming, f"bench-metrics-{r}-{int(on)}").processing_rate)
                metrics_cpu[on].append(cost.cpu_s)
            print(
                f"metrics round {r}: off {metrics_rates[False][-1]:,.0f}/s, on {metrics_rates[True][-1]:,.0f}/s",
                flush=True,
            )
        metrics_figures = (
            {
                "metrics_overhead": overhead(metrics_rates[False], metrics_rates[True]),
                "metrics_cpu_overhead": cpu_overhead(metrics_cpu[False], metrics_cpu[True]),
                "metrics_rounds_alerts_per_s": {
                    "off": [round(x) for x in metrics_rates[False]],
                    "on": [round(x) for x in metrics_rates[True]],
                },
            }
            if metrics_rates[True]
            else {}
        )
        median = {k: statistics.median(v) for k, v in rates.items()}
        best = {k: max(v) for k, v in rates.items()}
        for label, figures in (("median", median), ("best", best)):
            print(
                f"{label}: naive {figures['naive']:,.0f}/s, runner {figures['runner']:,.0f}/s, ceiling "
                f"{figures['ceiling']:,.0f}/s; runner/naive {figures['runner'] / figures['naive']:.1f}x "
                f"(target >= 3), runner/ceiling {figures['runner'] / figures['ceiling']:.2f} (target >= 0.7)",
                flush=True,
            )
        print(
            json.dumps(
                {
                    "alerts": total,
                    "rounds": args.rounds,
                    "figures": "best round of each",
                    "naive_alerts_per_s": round(best["naive"], 1),
                    "runner_alerts_per_s": round(best["runner"], 1),
                    "ceiling_alerts_per_s": round(best["ceiling"], 1),
                    "runner_vs_naive": round(best["runner"] / best["naive"], 2),
                    "runner_vs_ceiling": round(best["runner"] / best["ceiling"], 3),
                    "median_runner_vs_ceiling": round(median["runner"] / median["ceiling"], 3),
                    **metrics_figures,
                }
            )
        )
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
