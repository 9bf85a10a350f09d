"""The whole system at once: the `night` flow (publisher, three filters, archiver, each in its own process) on a
private broker and a private Prefect server that this script starts; its capacity as a ratio to the publisher.

Same run:
  (a) as fast as it goes: a drop folder simulated beforehand (not timed) with NIGHT_DONE, the three bundled
      filters live, then the archive. Published alerts/s (the publisher's own rate), each filter's and the
      archive's alerts/s over its stage, the night's wall time, each stage's CPU per alert and peak RSS. Then the
      publisher alone (`alertdist.jobs.publish`) on a copy of the same folder: night_vs_publisher = the night's
      publish rate / the lone publisher's, and the lone publisher's rate, the yardstick of (b).
  (b) capacity: one night, three filters live; once the publisher has opened it and each filter's group holds
      all its partitions (the stages start before the first exposure, as at Palomar), this script plays the alert
      pipeline, writing packet files into the drop folder evenly (a pre-simulated set, cycled: repeated candids,
      which the archiver drops as duplicates). Rate after rate (from --start x the lone publisher: up 1.25x while
      the night holds, down 1.5x while it misses, then bisection to --resolution; at most --steps rates), each a
      --warmup and a measured --window: a rate holds if over its window p99 from the file's time (the
      `alertdist.produced_ms` header) to a plain consumer < 500 ms, to the filters' committed outputs (read
      read_committed) < 1 s, and the pace was kept. After each rate the night settles (every filter's lag zero).
      capacity_alerts_per_min = the highest rate that held; capacity_vs_publisher and capacity_vs_ztf_peak
      (/ 80,000 per minute). system_cpu_ms_per_alert: CPU over that rate's window of every process of the
      system (the broker's JVM, the Prefect server, the flow's process, the publisher, each filter copy with its
      confined plug-in child), with the breakdown per process and per kind of thread (`_system.SystemCPU`).
  (c) metrics on against off: fresh nights at the capacity rate, ALERTDIST_METRICS=0 and 1, --metrics-rounds
      pairs in alternating order, one warm-up and one window each: metrics_overhead_night (medians, off / on).

Run from the repository root: .venv/bin/python bench/night.py [--alerts 5000] [--window 60] [--warmup 10]
[--start 0.3] [--steps 7] [--resolution 0.1] [--rate R (one rate, no search)] [--metrics-rounds 1]
[--no-metrics-ab]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import private_broker, private_prefect_server, say
from _live import live_night, print_line, run_night
from alertdist.infra import kafka_local
from alertdist.publish.sources import simulated_alerts
from alertdist.simulate.night import write_drop_folder

NIGHT_A, NIGHT_B, NIGHT_C = dt.date(2023, 10, 12), dt.date(2023, 10, 13), dt.date(2023, 10, 14)  # (c): C, C+1, ...


def full_speed(bootstrap: str, scratch: Path, alerts: int) -> dict:
    """(a): the whole night as fast as it goes, then the publisher alone on the same packets."""
    from alertdist.jobs.publish import publish_night
    from alertdist.publish.sources import SourceSpec
    from alertdist.settings import Settings

    folder, copy = scratch / "drop-a", scratch / "drop-solo"
    write_drop_folder(simulated_alerts(alerts, night=NIGHT_A, seed=5), folder)
    shutil.copytree(folder, copy)
    for f in (folder, copy):
        (f / "NIGHT_DONE").touch()
    started = time.monotonic()
    result = run_night(bootstrap, folder, NIGHT_A, scratch / "archive-a", "whole")
    wall = time.monotonic() - started
    solo = publish_night(
        Settings.load(bootstrap_servers=bootstrap, survey="solo"), NIGHT_A, SourceSpec("drop-folder", str(copy))
    )
    if solo.delivered_total != alerts or result["published"] != alerts:
        raise RuntimeError(f"published {result['published']} in the night, {solo.delivered_total} alone, of {alerts}")
    stages = result["stages"]
    return {
        "alerts": alerts,
        "night_wall_s": round(wall, 1),
        "publish_alerts_s": round(result["rate_alerts_s"], 1),
        "publisher_alone_alerts_s": round(solo.rate_alerts_s, 1),
        "night_vs_publisher": round(result["rate_alerts_s"] / solo.rate_alerts_s, 3),
        "stage_alerts_s": {name: round(alerts / s["wall_s"], 1) for name, s in stages.items()},
        "cpu_ms_per_alert": {name: round(1000 * s["cpu_s"] / alerts, 3) for name, s in stages.items()},
        "peak_rss_mb": {name: s["peak_rss_mb"] for name, s in stages.items()},
        "latency_ms": result["latency_ms"],
    }


#: The latency targets a rate must hold over its measured window (ms, p99).
TARGET_CONSUMER_MS, TARGET_FILTER_MS = 500.0, 1000.0
#: ZTF's peak alert rate, per minute.
ZTF_PEAK_PER_MINUTE = 80_000


def step(player, rate_per_minute: float, warmup: float, window: float) -> dict:
    """One rate: ``warmup`` s and then the measured ``window`` s of files, the night settled, and whether it held
    the targets over the window (latency, and the pace itself); the CPU of every process over the window."""
    player.play(rate_per_minute, warmup)
    before = player.cpu.snapshot()
    measured = player.play(rate_per_minute, window)
    after = player.cpu.snapshot()
    drained = player.settle(timeout=60 + 3 * window)
    latency = player.latency(measured)
    achieved = measured.alerts / measured.seconds * 60
    p99s = (latency["consumer"] or {}).get("p99_ms"), (latency["filters_all"] or {}).get("p99_ms")
    held = (
        drained is not None
        and None not in p99s
        and p99s[0] < TARGET_CONSUMER_MS
        and p99s[1] < TARGET_FILTER_MS
        and achieved >= 0.97 * rate_per_minute
    )
    say(
        f"  {rate_per_minute:,.0f}/min: {'held' if held else 'missed'}, p99 consumer {p99s[0]} ms, filters "
        f"{p99s[1]} ms, achieved {achieved:,.0f}/min, settled in {drained} s"
    )
    return {
        "rate_per_minute": round(rate_per_minute),
        "achieved_per_minute": round(achieved),
        "held": held,
        "settle_s": None if drained is None else round(drained, 1),
        "p99_consumer_ms": p99s[0],
        "p99_filter_ms": p99s[1],
        "latency": latency,
        "cpu": player.cpu.between(before, after, measured.alerts),
    }


def search(player, start: float, warmup: float, window: float, steps: int, resolution: float) -> list[dict]:
    """The highest rate that holds the targets: up by 1.25x from ``start`` while it holds, down by 1.5x while it
    misses, then bisection until the bracket is within ``resolution``; at most ``steps`` rates. A rate whose
    backlog does not drain ends the search (the next would start behind it)."""
    done, held, missed, rate = [], None, None, start
    for _ in range(steps):
        done.append(result := step(player, rate, warmup, window))
        if result["held"]:
            held = rate
        else:
            missed = rate
        if result["settle_s"] is None or (held and missed and missed / held <= 1 + resolution):
            break
        rate = rate * 1.25 if missed is None else rate / 1.5 if held is None else (held + missed) / 2
    return done


def capacity(bootstrap: str, pids: dict, scratch: Path, publisher_per_s: float, args) -> dict:
    """The capacity search in one night, three filters live; the capacity as a ratio to the lone publisher."""
    packets = [a.packet for a in simulated_alerts(2000, night=NIGHT_B, seed=9)]
    start = args.rate or args.start * publisher_per_s * 60
    steps = 1 if args.rate else args.steps
    play = functools.partial(
        search, start=start, warmup=args.warmup, window=args.window, steps=steps, resolution=args.resolution
    )
    tried, result = live_night(bootstrap, pids, scratch, NIGHT_B, "capacity", packets, play)
    held = [s for s in tried if s["held"]]
    best = max(held, key=lambda s: s["rate_per_minute"]) if held else None
    rate = best["rate_per_minute"] if best else 0
    return {
        "capacity_alerts_per_min": rate,
        "capacity_vs_publisher": round(rate / (publisher_per_s * 60), 3),
        "capacity_vs_ztf_peak": round(rate / ZTF_PEAK_PER_MINUTE, 3),
        "system_cpu_ms_per_alert": best["cpu"]["system_cpu_ms_per_alert"] if best else None,
        "at_capacity": best,
        "steps": tried,
        "night_stages": result["stages"],
    }


#: What (c) compares, from a step's result.
OVERHEAD_FIGURES = {
    "p99_consumer_ms": lambda r: r["p99_consumer_ms"],
    "p99_filter_ms": lambda r: r["p99_filter_ms"],
    "achieved_per_minute": lambda r: r["achieved_per_minute"],
    "system_cpu_ms_per_alert": lambda r: r["cpu"]["system_cpu_ms_per_alert"],
}


def metrics_overhead(bootstrap: str, pids: dict, scratch: Path, rate: float, args) -> dict:
    """The same rate in fresh nights, instrumentation off (``ALERTDIST_METRICS=0``, read by every stage's
    `Settings`) and on, --metrics-rounds pairs in alternating order (off first in the first): per side the median
    of each figure over the rounds (p99s, achieved pace, system CPU per alert), each round's, and off / on."""
    play = functools.partial(step, rate_per_minute=rate, warmup=args.warmup, window=args.window)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    order = [("off", "0"), ("on", "1")]
    for number in range(2 * args.metrics_rounds):
        label, value = order[number % 2] if (number // 2) % 2 == 0 else order[1 - number % 2]
        night = NIGHT_C + dt.timedelta(days=number)
        packets = [a.packet for a in simulated_alerts(2000, night=night, seed=11)]  # the publisher checks the night
        previous = os.environ.get("ALERTDIST_METRICS")
        os.environ["ALERTDIST_METRICS"] = value  # the stage processes inherit it
        try:
            result, _ = live_night(bootstrap, pids, scratch, night, f"metrics{label}{number}", packets, play)
        finally:
            os.environ.pop("ALERTDIST_METRICS") if previous is None else os.environ.update(ALERTDIST_METRICS=previous)
        runs[label].append({k: figure(result) for k, figure in OVERHEAD_FIGURES.items()})
    figures = {label: {k: _median([r[k] for r in rounds]) for k in OVERHEAD_FIGURES} for label, rounds in runs.items()}
    ratio = {
        k: round(figures["off"][k] / figures["on"][k], 3) if figures["on"][k] and figures["off"][k] else None
        for k in OVERHEAD_FIGURES
    }
    return {"rate_per_minute": round(rate), **figures, "off_over_on": ratio, "rounds": runs}


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=5000, help="size of the full-speed night (a)")
    parser.add_argument("--window", type=float, default=60, help="measured seconds of each rate (b, c)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before each rate's window (b, c)")
    parser.add_argument("--start", type=float, default=0.3, help="first rate, x the lone publisher's (b)")
    parser.add_argument("--steps", type=int, default=7, help="at most this many rates (b)")
    parser.add_argument("--resolution", type=float, default=0.1, help="stop when the bracket is this close (b)")
    parser.add_argument("--rate", type=float, default=0, help="alerts/minute: this one rate, no search (b)")
    parser.add_argument("--metrics-rounds", type=int, default=1, help="(c): pairs of nights, metrics off and on")
    parser.add_argument("--no-metrics-ab", action="store_true", help="skip (c), metrics on against off")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-night-") as tmp,
        private_broker("bench-night-kafka-") as cluster,
        private_prefect_server("bench-night-prefect-") as server,  # before Prefect is imported
    ):
        scratch = Path(tmp)
        pids = {"broker": kafka_local.status(cluster)[0].pid, "prefect": int(server.pid_file.read_text())}
        say(f"broker {cluster.bootstrap_servers}, Prefect {server.ui_url}; load {load_before}")
        a = full_speed(cluster.bootstrap_servers, scratch, args.alerts)
        say(f"(a) full speed: {json.dumps(a)}")
        b = capacity(cluster.bootstrap_servers, pids, scratch, a["publisher_alone_alerts_s"], args)
        say(f"(b) capacity: {json.dumps(b)}")
        c = None
        if b["capacity_alerts_per_min"] and not args.no_metrics_ab:
            c = metrics_overhead(cluster.bootstrap_servers, pids, scratch, b["capacity_alerts_per_min"], args)
            say(f"(c) metrics off/on: {json.dumps(c)}")
    best = b["at_capacity"] or {}
    line = {
        "capacity_vs_publisher": b["capacity_vs_publisher"],
        "capacity_alerts_per_min": b["capacity_alerts_per_min"],
        "capacity_vs_ztf_peak": b["capacity_vs_ztf_peak"],
        "system_cpu_ms_per_alert": b["system_cpu_ms_per_alert"],
        "system_cpu_per_process_ms_per_alert": best.get("cpu", {}).get("per_process"),
        "system_cores_at_capacity": best.get("cpu", {}).get("system_cores"),
        "capacity_p99_consumer_ms": best.get("p99_consumer_ms"),
        "capacity_p99_filter_ms": best.get("p99_filter_ms"),
        "steps": [
            {k: s[k] for k in ("rate_per_minute", "achieved_per_minute", "held", "p99_consumer_ms", "p99_filter_ms")}
            for s in b["steps"]
        ],
        "metrics_overhead_night": c,
        "publisher_alone_alerts_s": a["publisher_alone_alerts_s"],
        "published_alerts_s": a["publish_alerts_s"],
        "night_vs_publisher": a["night_vs_publisher"],
        "night_wall_s": a["night_wall_s"],
        "stage_alerts_s": a["stage_alerts_s"],
        "cpu_ms_per_alert": a["cpu_ms_per_alert"],
        "peak_rss_mb": a["peak_rss_mb"],
        "window_s": args.window,
        "warmup_s": args.warmup,
    }
    print_line(line, started, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
