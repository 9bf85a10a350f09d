"""The whole system at once: the `night` flow (publisher, three filters, archiver, each in its own process) on a
private broker and a private Prefect server that this script starts.

Same run:
  (a) as fast as it goes: a drop folder simulated beforehand (not timed) with NIGHT_DONE, the three bundled
      filters live, then the archive. Published alerts/s (the publisher's own rate), each filter's and the
      archive's alerts/s over its stage, the night's wall time, each stage's CPU per alert and peak RSS. Then the
      publisher alone (`alertdist.jobs.publish`) on a copy of the same folder: night_vs_publisher = the night's
      publish rate / the lone publisher's.
  (b) paced: once the publisher has opened the night and each filter holds its share of the night's partitions
      (the stages start before the first exposure, as at Palomar), this script plays the alert pipeline, writing
      packet files into the night's drop folder evenly at --rate alerts/minute for --warmup seconds and then
      --seconds more (cycling a pre-simulated set: repeated candids, which the archiver drops as duplicates),
      three filters live. Latency from the file's time (the `alertdist.produced_ms` header) to visible for a
      plain consumer, and to each filter's committed output (a read_committed consumer), each in its own
      process. The percentiles are of the --seconds after the warm-up (a night lasts hours: its first seconds,
      while a freshly started broker's JIT compiles the paths of transactions and read_committed fetches, are a
      sliver of it); the warm-up's own are reported beside them.

Run from the repository root: .venv/bin/python bench/night.py [--alerts 5000] [--rate 40000] [--seconds 60]
[--warmup 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import consume_latencies, private_broker, private_prefect_server, say
from alertdist.publish.sources import simulated_alerts
from alertdist.simulate.night import write_drop_folder

FILTERS = ["bright_transients", "solar_system", "variable_stars"]
NIGHT_A, NIGHT_B = dt.date(2023, 10, 12), dt.date(2023, 10, 13)


def _percentiles(values: list[float]) -> dict:
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {"n": len(values), "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": max(values)}


def _night(bootstrap: str, folder: Path, night: dt.date, archive: Path, survey: str) -> dict:
    from alertdist.flows.night import night as night_flow

    state = night_flow(
        night=night,
        source=str(folder),
        filters=FILTERS,
        dest=str(archive),
        bootstrap_servers=bootstrap,
        survey=survey,
        return_state=True,
    )
    if not state.is_completed():
        raise RuntimeError(f"the night failed: {state.message}")
    return state.result()


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
    result = _night(bootstrap, folder, NIGHT_A, scratch / "archive-a", "whole")
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


def _stages_up(bootstrap: str, naming, night: dt.date, partitions: int, timeout: float = 300.0) -> None:
    """Wait until the night is open (the publisher watches its folder) and each filter's group is stable with all
    ``partitions`` of the night assigned (it is consuming), as at Palomar, where the stages start at 17:10 and the
    first exposure comes after twilight."""
    from confluent_kafka import ConsumerGroupState

    from alertdist.filters.live import group_id_for
    from alertdist.kafka.clients import admin_client
    from alertdist.nights.state import read_night_state

    admin, groups = admin_client(bootstrap), [group_id_for(naming, night, f) for f in FILTERS]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_night_state(bootstrap, naming, night)
        if state is not None and state.state == "open":
            described = [f.result() for f in admin.describe_consumer_groups(groups).values()]
            if all(
                g.state == ConsumerGroupState.STABLE
                and sum(len(m.assignment.topic_partitions) for m in g.members) == partitions
                for g in described
            ):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the night's stages did not start within {timeout:.0f} s")


def _write_evenly(packets, folder: Path, first: int, count: int, interval: float) -> None:
    """Files ``first`` .. ``first + count - 1`` (complete files only, renamed into place), one every ``interval`` s."""
    start = time.monotonic()
    for i, packet in zip(range(first, first + count), itertools.islice(itertools.cycle(packets), first, None)):
        delay = start + (i - first) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        partial = folder / f".{i}.avro.tmp"
        partial.write_bytes(packet)
        os.replace(partial, folder / f"{i}.avro")


def _pipeline(
    packets: list[bytes], folder: Path, rate_per_minute: float, warm: int, n: int, ready, timing: dict
) -> None:
    """Play the alert pipeline: once ``ready()`` returns (the stages are up), ``warm`` and then ``n`` packet files
    written evenly at ``rate_per_minute``, then NIGHT_DONE. ``timing`` gets the split (ms since the epoch): every
    warm-up file's time is before it, every measured one's after (file times come from a clock that may lag up to
    a few ms, hence the 10 ms pause between the two), and how long the measured files took."""
    ready()
    interval = 60.0 / rate_per_minute
    _write_evenly(packets, folder, 0, warm, interval)
    time.sleep(0.01)
    timing["measured_from_ms"] = time.time_ns() // 1_000_000 - 5
    timing["started"] = time.monotonic()
    _write_evenly(packets, folder, warm, n, interval)
    (folder / "NIGHT_DONE").touch()
    timing["seconds"] = time.monotonic() - timing["started"]


def paced(bootstrap: str, scratch: Path, rate_per_minute: float, seconds: float, warmup: float) -> dict:
    """(b): latency to a plain consumer and to each filter's committed output at a steady pace."""
    from alertdist.kafka.clients import admin_client
    from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics

    naming = TopicNaming(survey="paced")
    packets = [a.packet for a in simulated_alerts(2000, night=NIGHT_B, seed=9)]
    n, warm = int(rate_per_minute / 60 * seconds), int(rate_per_minute / 60 * warmup)
    inputs = list(naming.programme_topics(NIGHT_B).values())
    outputs = [naming.filter_output_topic(t, f) for t in inputs for f in FILTERS]
    # every topic exists before the readers assign themselves to it (the filters create their outputs later)
    admin, layout = admin_client(bootstrap), TopicSettings()
    ensure_night_topics(admin, naming, NIGHT_B, layout)
    create_topics(admin, {t: (layout.partitions, 1, {}) for t in outputs})
    context = multiprocessing.get_context("spawn")
    queues, readers = [], []
    for topics, expected, config in (
        (inputs, warm + n, {}),
        *(([t for t in outputs if t.endswith(f)], None, {"isolation.level": "read_committed"}) for f in FILTERS),
    ):
        queue = context.Queue()
        reader = context.Process(
            target=consume_latencies,
            args=(bootstrap, topics, expected, warmup + seconds + 600, queue),
            kwargs={"with_produced": True, **config},
        )
        reader.start()
        if queue.get(timeout=120) != "ready":
            raise RuntimeError("a latency consumer did not start")
        queues.append(queue)
        readers.append(reader)
    folder = scratch / "drop-b"
    folder.mkdir()
    timing: dict = {}
    ready = functools.partial(_stages_up, bootstrap, naming, NIGHT_B, layout.partitions * len(inputs))
    pipeline = threading.Thread(target=_pipeline, args=(packets, folder, rate_per_minute, warm, n, ready, timing))
    pipeline.start()
    result = _night(bootstrap, folder, NIGHT_B, scratch / "archive-b", "paced")
    pipeline.join()
    got = [q.get(timeout=180)[0] for q in queues]
    for reader in readers:
        reader.join(30)
    if len(got[0]) != warm + n:
        raise RuntimeError(f"the plain consumer received {len(got[0])} of {warm + n}")
    split = timing["measured_from_ms"]
    measured = [[latency for produced, latency in pairs if produced >= split] for pairs in got]
    warming = [[latency for produced, latency in pairs if produced < split] for pairs in got]
    if len(measured[0]) != n:
        raise RuntimeError(f"{len(measured[0])} alerts timed after the warm-up, {n} written")
    return {
        "alerts": n,
        "warmup_alerts": warm,
        "rate_per_minute": rate_per_minute,
        # the pace the pipeline kept (the latencies show whether the night kept up with it)
        "achieved_per_minute": round(n / timing["seconds"] * 60),
        "consumer": _percentiles(measured[0]),
        "filters": {f: _percentiles(latencies) for f, latencies in zip(FILTERS, measured[1:])},
        "filters_all": _percentiles([x for latencies in measured[1:] for x in latencies]),
        "warmup_consumer": _percentiles(warming[0]) if warm else None,
        "warmup_filters_all": _percentiles([x for latencies in warming[1:] for x in latencies]) if warm else None,
        "stages": result["stages"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=5000, help="size of the full-speed night (a)")
    parser.add_argument("--rate", type=float, default=40_000, help="alerts/minute of the paced night (b)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the paced night (b), measured")
    parser.add_argument("--warmup", type=float, default=10, help="paced seconds before the measured ones (b)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-night-") as tmp,
        private_broker("bench-night-kafka-") as cluster,
        private_prefect_server("bench-night-prefect-") as server,  # before Prefect is imported
    ):
        scratch = Path(tmp)
        say(f"broker {cluster.bootstrap_servers}, Prefect {server.ui_url}; load {load_before}")
        a = full_speed(cluster.bootstrap_servers, scratch, args.alerts)
        say(f"(a) full speed: {json.dumps(a)}")
        b = paced(cluster.bootstrap_servers, scratch, args.rate, args.seconds, args.warmup)
        say(f"(b) paced: {json.dumps(b)}")
    line = {
        "published_alerts_s": a["publish_alerts_s"],
        "publisher_alone_alerts_s": a["publisher_alone_alerts_s"],
        "night_vs_publisher": a["night_vs_publisher"],
        "night_wall_s": a["night_wall_s"],
        "stage_alerts_s": a["stage_alerts_s"],
        "cpu_ms_per_alert": a["cpu_ms_per_alert"],
        "peak_rss_mb": a["peak_rss_mb"],
        "paced_rate_per_minute": args.rate,
        "paced_achieved_per_minute": b["achieved_per_minute"],
        "paced_p99_consumer_ms": b["consumer"]["p99_ms"],
        "paced_p99_filter_ms": b["filters_all"]["p99_ms"],
        "paced_p50_consumer_ms": b["consumer"]["p50_ms"],
        "paced_p50_filter_ms": b["filters_all"]["p50_ms"],
        "paced_warmup_s": args.warmup,
        "paced_warmup_p99_consumer_ms": (b["warmup_consumer"] or {}).get("p99_ms"),
        "paced_warmup_p99_filter_ms": (b["warmup_filters_all"] or {}).get("p99_ms"),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
