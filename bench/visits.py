"""Rubin's visits through the whole system: the `night` flow (publisher, the three bundled filters live, then the
archiver) on a private broker and Prefect server, fed as Rubin's alert production releases a visit.

Rubin sends ~10,000 alerts per visit, released in ~189 bursts over ~3 s, one visit every ~37 s (the profile of
Rubin's alert-stream simulator). Once the night is open and each filter's group holds all its partitions, this
script writes each visit's packet files into the drop folder in --bursts bursts spread over --release seconds
(a pre-simulated set of ZTF-sized packets, cycled), one visit every --cadence seconds, --visits visits. Per
visit: p50/p99 from the file's time (`alertdist.produced_ms`) to a plain consumer and to the filters' committed
outputs (read read_committed); the drain time, from the visit's first file until the plain consumer has every
alert and every filter's lag is back to zero; and the system's CPU per alert over the visit (`_system.SystemCPU`).
visit_drain_fraction = the longest drain of the visits after the first / --cadence (null when a visit did not
drain before the next began: more than 1).

Run from the repository root: .venv/bin/python bench/visits.py [--visits 8] [--alerts-per-visit 10000]
[--bursts 189] [--release 3] [--cadence 37]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import private_broker, private_prefect_server, say
from _live import Player, Window, live_night, print_line
from alertdist.infra import kafka_local
from alertdist.publish.sources import simulated_alerts

NIGHT = dt.date(2023, 10, 20)


def release(player: Player, alerts: int, bursts: int, seconds: float) -> Window:
    """One visit: ``alerts`` files in ``bursts`` bursts evenly over ``seconds``."""
    start_ms, started = player.now_ms() - 2, time.monotonic()
    for k in range(bursts):
        delay = started + k * seconds / bursts - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        player.write(alerts * (k + 1) // bursts - alerts * k // bursts)
    return Window(start_ms, player.now_ms(), alerts, time.monotonic() - started)


def drain(player: Player, started: float, until: float) -> float | None:
    """Seconds from ``started`` until the plain consumer has every alert written and every filter's lag against
    the end offsets is zero; None if not by ``until`` (monotonic)."""
    if not player.consumer_has_all(until):
        return None
    done = player.lag.wait_zero(until - time.monotonic(), every=0.05)
    return None if done is None else time.monotonic() - started


def visits(player: Player, args) -> list[dict]:
    """Every visit, one every ``args.cadence`` s: its window, drain and CPU; the latencies once all are settled."""
    done = []
    for number in range(args.visits):
        started = time.monotonic()
        before = player.cpu.snapshot()
        window = release(player, args.alerts_per_visit, args.bursts, args.release)
        drained = drain(player, started, started + args.cadence - 0.5)
        after = player.cpu.snapshot()
        say(f"  visit {number + 1}: released in {window.seconds:.2f} s, drained in {drained} s")
        done.append((window, drained, player.cpu.between(before, after, window.alerts)))
        time.sleep(max(0.0, started + args.cadence - time.monotonic()))
    if player.settle(timeout=300) is None:
        raise RuntimeError("the night did not settle within 300 s of the last visit")
    rows = []
    for i, (window, drained, cpu) in enumerate(done):
        end_ms = done[i + 1][0].start_ms if i + 1 < len(done) else player.now_ms()
        latency = player.latency(Window(window.start_ms, end_ms, window.alerts, window.seconds))
        consumer, filters = latency["consumer"] or {}, latency["filters_all"] or {}
        rows.append(
            {
                "visit": i + 1,
                "released_s": round(window.seconds, 2),
                "drain_s": None if drained is None else round(drained, 2),
                "p50_consumer_ms": consumer.get("p50_ms"),
                "p99_consumer_ms": consumer.get("p99_ms"),
                "p50_filter_ms": filters.get("p50_ms"),
                "p99_filter_ms": filters.get("p99_ms"),
                "outputs": filters.get("n", 0),
                "system_cpu_ms_per_alert": cpu["system_cpu_ms_per_alert"],
                "cpu_per_process_ms_per_alert": cpu["per_process"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=8, help="visits (the first one's figures are warm-up)")
    parser.add_argument("--alerts-per-visit", type=int, default=10_000)
    parser.add_argument("--bursts", type=int, default=189, help="bursts per visit")
    parser.add_argument("--release", type=float, default=3.0, help="seconds over which a visit's bursts come")
    parser.add_argument("--cadence", type=float, default=37.0, help="seconds from one visit to the next")
    args = parser.parse_args(argv)
    if args.visits < 2:
        parser.error("--visits must be at least 2 (the first visit is the warm-up)")
    load_before, started = os.getloadavg(), time.monotonic()
    packets = [a.packet for a in simulated_alerts(min(args.alerts_per_visit, 2000), night=NIGHT, seed=13)]
    with (
        tempfile.TemporaryDirectory(prefix="bench-visits-") as tmp,
        private_broker("bench-visits-kafka-") as cluster,
        private_prefect_server("bench-visits-prefect-") as server,  # before Prefect is imported
    ):
        pids = {"broker": kafka_local.status(cluster)[0].pid, "prefect": int(server.pid_file.read_text())}
        say(f"broker {cluster.bootstrap_servers}, Prefect {server.ui_url}; load {load_before}")
        rows, _ = live_night(
            cluster.bootstrap_servers, pids, Path(tmp), NIGHT, "visits", packets, lambda p: visits(p, args)
        )
    later = rows[1:]
    drains = [r["drain_s"] for r in later]
    line = {
        "visit_drain_fraction": None if None in drains else round(max(drains) / args.cadence, 3),
        "undrained_visits": sum(d is None for d in drains),
        "max_p99_consumer_ms": max((r["p99_consumer_ms"] or 0) for r in later),
        "max_p99_filter_ms": max((r["p99_filter_ms"] or 0) for r in later),
        "median_system_cpu_ms_per_alert": statistics.median(r["system_cpu_ms_per_alert"] for r in later),
        "visits": rows,
        "profile": vars(args),
    }
    print_line(line, started, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
