"""The publisher's throughput against Kafka's own producer benchmark, then its latency at ZTF's peak rate.

Same private broker, same run:
  (a) java org.apache.kafka.tools.ProducerPerformance: N random records of the mean size of ZTF's real 4.01
      packets (of the simulated ones when ../shared/data is absent), the same producer settings as ours;
  (b) alertdist.publish.publisher.publish sending a simulated night of N alerts, generated into memory beforehand so the
      simulator's cost is not measured: peek, routing, headers, delivery callbacks, night open/close.
Both without compression by default: ProducerPerformance's payload is random letters, real packets carry a
25 KB JSON schema that lz4 shrinks a lot, so with lz4 the two would not send the same bytes (--compression lz4
runs that anyway, for information). Rates are MB/s of record values (1 MB = 1e6 bytes), over first send to
last acknowledgement; rounds alternate (a) and (b), and the best round of each counts.

Latency: the simulated packets are released evenly at 80,000 alerts/minute (ZTF's observed peak) for
--latency-seconds, each stamped with its release time as `alertdist.produced_ms`, published, and consumed live
by a consumer in another process; percentiles of (consumer received - produced_ms). It runs twice, metrics off
then on (`metrics_paced_p99_ms`); the latency_* figures are the run with metrics on.

Metrics cost: --metrics-rounds (>= 3) interleaved pairs of publisher rounds, metrics off then on;
`metrics_overhead` is the median over the pairs of 1 - (rate on / rate off) (target <= 0.03).

Run from the repository root: .venv/bin/python bench/publish.py [--alerts 8000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

from _common import consume_latencies, cpu_seconds, java_producer_performance, kafka_libs, private_broker, say
from _metrics import check_pairs, cpu_overhead, metrics, overhead
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, paced, simulated_alerts

REPO = Path(__file__).resolve().parents[1]

REAL_401 = REPO.parent / "shared" / "data" / "ztf-alerts" / "20231012"
NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 14


def _publish(source, bootstrap: str, naming: TopicNaming, compression: str):
    return publish(
        source,
        bootstrap_servers=bootstrap,
        naming=naming,
        night=NIGHT,
        producer_overrides={"compression.type": compression},
    )


def publisher_rate(bootstrap: str, packets: list[SourcePacket], survey: str, compression: str) -> tuple[float, float]:
    """MB/s and alerts/s of the publisher over one simulated night held in memory."""
    naming = TopicNaming(survey=survey)
    ensure_night_topics(
        admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=PARTITIONS, compression="producer")
    )
    result = _publish(packets, bootstrap, naming, compression)
    if result.delivered_total != len(packets):
        raise RuntimeError(f"publisher delivered {result.delivered_total} of {len(packets)}")
    return result.rate_mb_s, result.rate_alerts_s


def latency_run(
    bootstrap: str,
    packets: list[SourcePacket],
    rate_per_minute: float,
    seconds: float,
    compression: str,
    broker_pid: int,
    survey: str = "latency",
) -> dict:
    """Latency percentiles at a paced rate, and the CPU each part spent per alert (publisher, broker, consumer).

    The CPU figures do not depend on what else runs on the machine, so they also give the rate an idle machine
    could sustain: its cores divided by the CPU all three parts need per alert.
    """
    # a fresh broker answers the first idempotent producer only once its coordinator has loaded, and a cold JVM
    # spends several times the CPU per message until its JIT has compiled the produce path: neither is our latency
    publisher_rate(bootstrap, list(itertools.islice(itertools.cycle(packets), 3000)), f"{survey}warmup", compression)
    naming = TopicNaming(survey=survey)
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    n = int(rate_per_minute / 60 * seconds)
    topics = list(naming.programme_topics(NIGHT).values())
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    reader = context.Process(target=consume_latencies, args=(bootstrap, topics, n, seconds + 120, results))
    reader.start()
    if results.get(timeout=60) != "ready":
        raise RuntimeError("the latency consumer did not start")
    time.sleep(1.0)  # let it fetch its first (empty) responses
    stream = paced(itertools.islice(itertools.cycle(packets), n), rate_per_minute=rate_per_minute)
    broker_before, publisher_before = cpu_seconds(broker_pid), cpu_seconds()
    result = _publish(stream, bootstrap, naming, compression)
    publisher_cpu = cpu_seconds() - publisher_before
    latencies, consumer_cpu = results.get(timeout=seconds + 150)
    broker_cpu = cpu_seconds(broker_pid) - broker_before
    reader.join(30)
    if len(latencies) != n:
        raise RuntimeError(f"the consumer received {len(latencies)} of {n} messages")
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    cpu_ms = {
        "publisher": 1000 * publisher_cpu / n,
        "broker": 1000 * broker_cpu / n,
        "consumer": 1000 * consumer_cpu / n,
    }
    return {
        "alerts": n,
        "achieved_per_minute": round(n / result.streaming_s * 60),
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "max_ms": latencies[-1],
        "cpu_ms_per_alert": {k: round(v, 3) for k, v in cpu_ms.items()},
        "idle_capacity_per_minute": round(os.cpu_count() * 60_000 / sum(cpu_ms.values())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=8000, help="records per throughput round (default 8000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        default=3,
        help="pairs of publisher rounds, metrics off/on (>= 3; the median pair counts)",
    )
    parser.add_argument("--compression", default="none", choices=["none", "lz4"], help="for both (a) and (b)")
    parser.add_argument("--rate", type=float, default=80_000, help="alerts/minute of the latency run")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--latency-compression",
        default="lz4",
        choices=["none", "lz4"],
        help="producer compression of the latency run (default lz4, the production setting)",
    )
    parser.add_argument("--only", choices=["throughput", "latency"], help="run one part (the JSON has its figures)")
    args = parser.parse_args(argv)
    check_pairs(parser, args.metrics_rounds)
    load_before = os.getloadavg()[0]

    say(f"simulating a night of {args.alerts} alerts into memory...")
    started = time.monotonic()
    packets = [
        SourcePacket(f"{a.candid}.avro", a.packet, None) for a in simulated_alerts(args.alerts, night=NIGHT, seed=1)
    ]
    simulated_mean = statistics.fmean(len(p.packet) for p in packets)
    say(f"  {len(packets)} packets, mean {simulated_mean:,.0f} B, in {time.monotonic() - started:.0f} s")
    real = [p.stat().st_size for p in REAL_401.glob("*.avro")]
    record_size = round(statistics.fmean(real)) if real else round(simulated_mean)
    say(
        f"record size for ProducerPerformance: {record_size:,} B "
        f"({'mean of the real 4.01 packets' if real else 'mean of the simulated packets: ../shared/data is absent'})"
    )

    libs = kafka_libs()
    with private_broker("bench-publish-") as cluster:
        bootstrap = cluster.bootstrap_servers
        say(f"broker {bootstrap} (Kafka {kafka_local.installed_version(libs)}), compression {args.compression}")
        java_rates, ours, alert_rates, latency = [], [], [], {}
        figures = {}  # metrics on against off
        for r in range(1, args.rounds + 1 if args.only != "latency" else 1):
            topic = f"perf_{r}"
            create_topics(
                admin_client(bootstrap),
                {
                    topic: (
                        PARTITIONS,
                        1,
                        {"max.message.bytes": str(10 * 1024 * 1024), "compression.type": "producer"},
                    )
                },
            )
            java_rates.append(
                java_producer_performance(
                    libs, bootstrap, topic, args.alerts, record_size, args.compression, timeout=600
                )
            )
            say(f"round {r}: (a) ProducerPerformance {java_rates[-1]:.1f} MB/s")
            mb_s, alerts_s = publisher_rate(bootstrap, packets, f"round{r}", args.compression)
            ours.append(mb_s)
            alert_rates.append(alerts_s)
            say(
                f"round {r}: (b) publisher          {mb_s:.1f} MB/s ({alerts_s:,.0f} alerts/s)   ratio "
                f"{mb_s / java_rates[-1]:.2f}"
            )
        metrics_rounds, metrics_cpu = {False: [], True: []}, {False: [], True: []}
        for r in range(1, args.metrics_rounds + 1 if args.only != "latency" else 1):
            for on in (False, True):  # interleaved, so drift on a shared machine hits both alike
                with metrics(on) as cost:
                    metrics_rounds[on].append(publisher_rate(bootstrap, packets, f"m{r}{int(on)}", args.compression)[1])
                metrics_cpu[on].append(cost.cpu_s)
            say(f"metrics round {r}: off {metrics_rounds[False][-1]:,.0f}, on {metrics_rounds[True][-1]:,.0f} alerts/s")
        if metrics_rounds[True]:
            figures["metrics_overhead"] = overhead(metrics_rounds[False], metrics_rounds[True])
            figures["metrics_cpu_overhead"] = cpu_overhead(metrics_cpu[False], metrics_cpu[True])
            figures["metrics_rounds_alerts_s"] = {
                state: [round(x) for x in metrics_rounds[on]] for state, on in (("off", False), ("on", True))
            }
            say(
                f"metrics_overhead {figures['metrics_overhead']:.3f} (target <= 0.03), "
                f"CPU {figures['metrics_cpu_overhead']:+.3f}"
            )
        if java_rates:
            best_java, best_ours = max(java_rates), max(ours)
            say(
                f"best: (a) {best_java:.1f} MB/s, (b) {best_ours:.1f} MB/s, ratio {best_ours / best_java:.2f} "
                "(target >= 0.8)"
            )
        if args.only == "throughput":
            return _report(args, record_size, java_rates, ours, alert_rates, latency, load_before, figures)
        say(
            f"latency: {args.rate:,.0f} alerts/minute for {args.latency_seconds:.0f} s, consumed live in "
            "another process..."
        )
        broker_pid = int(cluster.pid_file(1).read_text().strip())
        paced = {}
        for on in (False, True):  # metrics off, then on: the latency_* figures are the run with metrics on
            with metrics(on):
                paced[on] = latency_run(
                    bootstrap,
                    packets,
                    args.rate,
                    args.latency_seconds,
                    args.latency_compression,
                    broker_pid,
                    survey=f"latency{int(on)}",
                )
            say(
                f"  metrics {'on' if on else 'off'}: {paced[on]['alerts']} alerts at "
                f"{paced[on]['achieved_per_minute']:,}/min: p50 {paced[on]['p50_ms']:.0f} ms, "
                f"p95 {paced[on]['p95_ms']:.0f} ms, p99 {paced[on]['p99_ms']:.0f} ms, max {paced[on]['max_ms']} ms "
                "(target p99 < 1000)"
            )
        latency = paced[True]
        figures["metrics_paced_p99_ms"] = {"off": round(paced[False]["p99_ms"], 1), "on": round(latency["p99_ms"], 1)}
        say(
            f"  CPU per alert (ms): {latency['cpu_ms_per_alert']}; an idle {os.cpu_count()}-core machine could "
            f"sustain ~{latency['idle_capacity_per_minute']:,} alerts/minute through all three"
        )
    return _report(args, record_size, java_rates, ours, alert_rates, latency, load_before, figures)


def _report(args, record_size, java_rates, ours, alert_rates, latency, load_before, figures=None) -> int:
    """The last line: one JSON object (throughput figures are null when only the latency ran, and vice versa)."""
    best_java, best_ours = (max(java_rates), max(ours)) if java_rates else (None, None)
    print(
        json.dumps(
            {
                "alerts": args.alerts,
                "record_size": record_size,
                "compression": args.compression,
                "rounds": len(ours),
                "producer_performance_mb_s": best_java and round(best_java, 1),
                "publisher_mb_s": best_ours and round(best_ours, 1),
                "publisher_alerts_s": round(max(alert_rates)) if alert_rates else None,
                "ratio": round(best_ours / best_java, 3) if java_rates else None,
                "producer_performance_rounds": [round(x, 1) for x in java_rates],
                "publisher_rounds": [round(x, 1) for x in ours],
                "latency_rate_per_minute": args.rate if latency else None,
                "latency_compression": args.latency_compression if latency else None,
                **{f"latency_{k}": v for k, v in latency.items()},
                **(figures or {}),
                "load_average_before": round(load_before, 1),
                "load_average_after": round(os.getloadavg()[0], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
