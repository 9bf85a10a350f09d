"""Alerts/s of the codec against the loops every ZTF consumer and producer writes, on ZTF's real 4.01 packets.

Measured in the same run, interleaved round by round so machine load hits all alike, on packets held in memory:
  naive       next(fastavro.reader(BytesIO(msg)))   -- re-parses the 25 KB embedded schema every message
  full        alertdist.avro.codec.decode(msg)               -- cached schema, same record
  projection  alertdist.avro.codec.decode(msg, fields=[...]) -- prefix schema, stops after `candidate`
and on the records they hold (each re-encodes to its packet byte for byte):
  writer      fastavro.writer(BytesIO(), parsed_schema, [record])     -- a producer's naive loop, schema parsed once
  encode      alertdist.avro.codec.encode(record, version, <packet's layout>)   -- compiled fast path, strict check
  unchecked   the same with check=False                                -- the simulator's call
With --night N it also times simulate_night(N) end to end (encoding was ~88% of its time before the compiled
encoder), over CPU time and wall time. The codec rates are over CPU time (the machine is shared). The best round
of each counts (the least disturbed by other work); the last line printed is one JSON object with rates and ratios.

Run from the repository root: .venv/bin/python bench/codec.py [--messages 3000] [--rounds 5] [--night 5000]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import fastavro

from alertdist import schemas
from alertdist.avro import codec
from alertdist.simulate.night import simulate_night

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ztf-alerts" / "20231012"
PROJECTED_FIELDS = ["objectId", "candid", "candidate"]
_PARSED = fastavro.parse_schema(schemas.load_schema("4.01"))


def naive(message: bytes) -> object:
    return next(fastavro.reader(io.BytesIO(message)))


def full(message: bytes) -> object:
    return codec.decode(message)


def projection(message: bytes) -> object:
    return codec.decode(message, fields=PROJECTED_FIELDS)


def writer(job: tuple) -> object:
    out = io.BytesIO()
    fastavro.writer(out, _PARSED, [job[0]])
    return out


def encode(job: tuple) -> object:
    record, layout = job
    return codec.encode(record, "4.01", sync_marker=layout.sync_marker, metadata_keys=layout.metadata_keys)


def unchecked(job: tuple) -> object:
    record, layout = job
    return codec.encode(record, "4.01", sync_marker=layout.sync_marker, metadata_keys=layout.metadata_keys, check=False)


def alerts_per_second(method: Callable[[object], object], inputs: list) -> float:
    """Over CPU time: on a shared machine, wall time mostly measures the other work."""
    gc.collect()
    started = time.process_time()
    for item in inputs:
        method(item)
    return len(inputs) / (time.process_time() - started)


def simulated_night_rates(n_alerts: int) -> dict[str, float]:
    """simulate_night consumed end to end: alerts/s over CPU time and over wall time (setup included)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in simulate_night(n_alerts, night=date(2023, 10, 12)))
    return {"cpu": count / (time.process_time() - cpu), "wall": count / (time.perf_counter() - wall)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages per round (real packets repeated)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--night", type=int, default=0, help="also time simulate_night(N) end to end, each round")
    args = parser.parse_args(argv)

    packets = [p.read_bytes() for p in sorted(DATA.glob("*.avro"))]
    if not packets:
        print(f"../shared/data not found: no real ZTF 4.01 packets at {DATA}", file=sys.stderr)
        return 2
    messages = (packets * (args.messages // len(packets) + 1))[: args.messages]
    jobs = [(codec.decode(m), codec.container_layout(m)) for m in messages]
    for packet in packets:  # the codec must give the same answer before its speed means anything
        reference = naive(packet)
        assert full(packet) == reference
        assert projection(packet) == {f: reference[f] for f in PROJECTED_FIELDS}
        job = (reference, codec.container_layout(packet))
        assert encode(job) == unchecked(job) == packet
    print(
        f"{len(messages)} messages from {len(packets)} real 4.01 packets "
        f"({sum(map(len, messages)) / len(messages) / 1024:.1f} KiB mean), {args.rounds} rounds"
    )

    methods = {
        "naive": (naive, messages),
        "full": (full, messages),
        "projection": (projection, messages),
        "writer": (writer, jobs),
        "encode": (encode, jobs),
        "unchecked": (unchecked, jobs),
    }
    rates: dict[str, list[float]] = {name: [] for name in methods}
    night: dict[str, list[float]] = {"cpu": [], "wall": []}
    for round_no in range(1, args.rounds + 1):
        for name, (method, inputs) in methods.items():
            rates[name].append(alerts_per_second(method, inputs))
        line = ", ".join(f"{name} {rates[name][-1]:,.0f}/s" for name in methods)
        if args.night:
            for key, rate in simulated_night_rates(args.night).items():
                night[key].append(rate)
            line += f"; simulate_night({args.night}) {night['cpu'][-1]:,.0f}/s CPU, {night['wall'][-1]:,.0f}/s wall"
        print(f"round {round_no}: {line}", flush=True)

    best = {name: max(values) for name, values in rates.items()}
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        "median: "
        + ", ".join(f"{name} {medians[name]:,.0f}/s" for name in methods)
        + f"; full/naive {medians['full'] / medians['naive']:.2f}x, "
        f"projection/naive {medians['projection'] / medians['naive']:.1f}x, "
        f"encode/writer {medians['encode'] / medians['writer']:.1f}x, "
        f"unchecked/writer {medians['unchecked'] / medians['writer']:.1f}x"
    )
    result = {
        "naive_alerts_per_s": round(best["naive"], 1),
        "full_alerts_per_s": round(best["full"], 1),
        "projection_alerts_per_s": round(best["projection"], 1),
        "full_vs_naive": round(best["full"] / best["naive"], 3),
        "projection_vs_naive": round(best["projection"] / best["naive"], 2),
        "writer_alerts_per_s": round(best["writer"], 1),
        "encode_alerts_per_s": round(best["encode"], 1),
        "unchecked_encode_alerts_per_s": round(best["unchecked"], 1),
        "encode_vs_writer": round(best["encode"] / best["writer"], 2),
        "unchecked_encode_vs_writer": round(best["unchecked"] / best["writer"], 2),
    }
    if args.night:
        result["simulate_night_alerts"] = args.night
        result["simulate_night_alerts_per_cpu_s"] = round(max(night["cpu"]), 1)
        result["simulate_night_alerts_per_wall_s"] = round(max(night["wall"]), 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
