"""Replaying a simulated night's tarball as fast as possible, against Kafka's own producer benchmark.

Same private broker, same run, rounds alternating which goes first:
  (a) java org.apache.kafka.tools.ProducerPerformance: N random records of the tarball's mean packet size;
  (b) alertdist.access.replay.replay_to_topic on the tarball: gunzip and untar streamed from disk, `codec.peek` of every
      packet (key = objectId, candid header), produce with delivery callbacks, flush, reconcile.
Both into a fresh 14-partition topic per round, acks=all, idempotent, linger.ms 20, batch.size 4 MB, and the same
compression for both: none by default (ProducerPerformance's payload is random letters, while a packet carries a
25 KB JSON schema that lz4 shrinks a lot, so with lz4 the two would not send the same bytes; --compression lz4
runs that anyway, for information). Rates are MB/s of record values (1 MB = 1e6 bytes) from the first record
to the last acknowledgement; the records have the same size, so the MB/s ratio is also the alerts/s ratio.
Also measured, once: reading the tarball alone (no Kafka), the ceiling of (b)'s own side on this machine.

The tarball is simulated once and kept in .alertdist/bench/ (the simulator makes ~70 alerts/s).
Run from the repository root: .venv/bin/python bench/replay.py [--alerts 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import java_producer_performance, private_broker, say
from alertdist.access.readers import ReadCounts, open_sources, tarball_alerts
from alertdist.access.replay import replay_to_topic
from alertdist.archive.tarball import TarballWriter
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import jd_to_unix
from alertdist.nights.topics import create_topics
from alertdist.publish.sources import simulated_alerts
from alertdist.settings import Settings

NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 14


def night_tarball(folder: Path, n: int, seed: int) -> Path:
    """A simulated night of ``n`` alerts as an archive tarball (candid order), made once and cached."""
    path = folder / f"replay-night-{n}-seed{seed}.tar.gz"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    alerts = []
    started = time.monotonic()
    for i, alert in enumerate(simulated_alerts(n, night=NIGHT, seed=seed), 1):
        alerts.append((alert.candid, alert.packet, alert.jd))
        if i % 500 == 0:
            say(f"  simulated {i}/{n} ({i / (time.monotonic() - started):.0f} alerts/s)")
    scratch = path.with_name(f".{path.name}.tmp")
    with open(scratch, "wb") as f:
        writer = TarballWriter(f)
        for candid, packet, jd in sorted(alerts):
            writer.add(f"{candid}.avro", packet, jd_to_unix(jd))
        writer.close()
    os.replace(scratch, path)
    return path


def replay_rate(bootstrap: str, tarball: Path, topic: str, n: int, compression: str) -> tuple[float, float]:
    """MB/s and alerts/s of replaying the tarball into ``topic``."""
    alerts, counts, names = open_sources([str(tarball)])
    overrides = {"compression.type": compression}
    result = replay_to_topic(
        alerts, bootstrap_servers=bootstrap, topic=topic, sources=names, counts=counts, producer_overrides=overrides
    )
    if result.delivered != n or result.bad:
        raise RuntimeError(f"replay delivered {result.delivered} of {n} ({result.bad} bad)")
    return result.rate_mb_s, result.rate_alerts_s


def reading_rate(tarball: Path) -> tuple[float, int, int]:
    """MB/s of streaming and peeking the tarball with no Kafka at all; and the count and total bytes."""
    counts = ReadCounts(str(tarball))
    started = time.perf_counter()
    for _ in tarball_alerts(str(tarball), counts=counts):
        pass
    return counts.bytes / 1e6 / (time.perf_counter() - started), counts.good, counts.bytes


def _topic(bootstrap: str, name: str) -> str:
    create_topics(
        admin_client(bootstrap),
        {name: (PARTITIONS, 1, {"max.message.bytes": str(10 * 1024 * 1024 + 65536), "compression.type": "producer"})},
    )
    return name


def _drop(bootstrap: str, name: str) -> None:
    admin = admin_client(bootstrap)  # kept alive until the deletion is confirmed
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=3000, help="alerts in the simulated night (default 3000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compression", default="none", choices=["none", "lz4"], help="for both (a) and (b)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    settings = Settings.load()

    say(f"tarball of a simulated night of {args.alerts} alerts...")
    tarball = night_tarball(settings.home / "bench", args.alerts, args.seed)
    read_mb_s, n, total = reading_rate(tarball)
    record_size = round(total / n)
    say(
        f"  {tarball} ({tarball.stat().st_size / 1e6:,.0f} MB gzip'd): {n} packets, mean {record_size:,} B; "
        f"read + peek alone {read_mb_s:,.0f} MB/s ({read_mb_s * 1e6 / record_size:,.0f} alerts/s)"
    )

    libs = settings.kafka_home / "libs"
    with private_broker("bench-replay-") as cluster:
        bootstrap = cluster.bootstrap_servers
        say(f"broker {bootstrap} (Kafka {kafka_local.installed_version(libs)}), compression {args.compression}")
        replay_rate(bootstrap, tarball, _topic(bootstrap, "warmup"), n, args.compression)  # coordinator loaded
        _drop(bootstrap, "warmup")
        java, ours, alert_rates = [], [], []
        for r in range(1, args.rounds + 1):
            for which in ("java", "ours") if r % 2 else ("ours", "java"):
                topic = _topic(bootstrap, f"{which}_{r}")
                if which == "java":
                    java.append(java_producer_performance(libs, bootstrap, topic, n, record_size, args.compression))
                    say(f"round {r}: (a) ProducerPerformance {java[-1]:.1f} MB/s")
                else:
                    mb_s, alerts_s = replay_rate(bootstrap, tarball, topic, n, args.compression)
                    ours.append(mb_s)
                    alert_rates.append(alerts_s)
                    say(f"round {r}: (b) replay              {mb_s:.1f} MB/s ({alerts_s:,.0f} alerts/s)")
                _drop(bootstrap, topic)  # keep the broker's disk and page cache alike for every round
            say(f"round {r}: ratio {ours[-1] / java[-1]:.2f}")

    best_java, best_ours = max(java), max(ours)
    median_ratio = statistics.median(ours) / statistics.median(java)
    say(
        f"best: (a) {best_java:.1f} MB/s, (b) {best_ours:.1f} MB/s, ratio {best_ours / best_java:.2f}; "
        f"median ratio {median_ratio:.2f} (target >= 0.8)"
    )
    print(
        json.dumps(
            {
                "alerts": n,
                "record_size": record_size,
                "compression": args.compression,
                "rounds": args.rounds,
                "producer_performance_mb_s": round(best_java, 1),
                "replay_mb_s": round(best_ours, 1),
                "replay_alerts_s": round(max(alert_rates)),
                "ratio": round(best_ours / best_java, 3),
                "median_ratio": round(median_ratio, 3),
                "read_only_mb_s": round(read_mb_s, 1),
                "producer_performance_rounds": [round(x, 1) for x in java],
                "replay_rounds": [round(x, 1) for x in ours],
                "load_average_before": round(load_before, 1),
                "load_average_after": round(os.getloadavg()[0], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
