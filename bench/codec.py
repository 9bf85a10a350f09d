"""Alerts/s of the codec against the loop every ZTF consumer writes, on ZTF's real 4.01 packets held in memory.

Measured in the same run, interleaved round by round so machine load hits all three alike:
  naive       next(fastavro.reader(BytesIO(msg)))   -- re-parses the 25 KB embedded schema every message
  full        tasks.codec.decode(msg)               -- cached schema, same record
  projection  tasks.codec.decode(msg, fields=[...]) -- prefix schema, stops after `candidate`
The best round of each counts (the least disturbed by other work on the machine); the last line printed is one
JSON object with the three rates and both ratios.

Run from the repository root: .venv/bin/python bench/codec.py [--messages 3000] [--rounds 5]
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
from pathlib import Path

import fastavro

from tasks import codec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ztf-alerts" / "20231012"
PROJECTED_FIELDS = ["objectId", "candid", "candidate"]


def naive(message: bytes) -> dict:
    return next(fastavro.reader(io.BytesIO(message)))


def full(message: bytes) -> dict:
    return codec.decode(message)


def projection(message: bytes) -> dict:
    return codec.decode(message, fields=PROJECTED_FIELDS)


def alerts_per_second(decode_one: Callable[[bytes], dict], messages: list[bytes]) -> float:
    gc.collect()
    started = time.perf_counter()
    for message in messages:
        decode_one(message)
    return len(messages) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages per round (real packets repeated)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    packets = [p.read_bytes() for p in sorted(DATA.glob("*.avro"))]
    if not packets:
        print(f"../shared/data not found: no real ZTF 4.01 packets at {DATA}", file=sys.stderr)
        return 2
    messages = (packets * (args.messages // len(packets) + 1))[: args.messages]
    for packet in packets:  # the codec must give the same answer before its speed means anything
        reference = naive(packet)
        assert full(packet) == reference
        assert projection(packet) == {f: reference[f] for f in PROJECTED_FIELDS}
    print(f"{len(messages)} messages from {len(packets)} real 4.01 packets "
          f"({sum(map(len, messages)) / len(messages) / 1024:.1f} KiB mean), {args.rounds} rounds")

    methods = {"naive": naive, "full": full, "projection": projection}
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for round_no in range(1, args.rounds + 1):
        for name, method in methods.items():
            rates[name].append(alerts_per_second(method, messages))
        print(f"round {round_no}: " + ", ".join(f"{name} {rates[name][-1]:,.0f}/s" for name in methods), flush=True)

    best = {name: max(values) for name, values in rates.items()}
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print("median: " + ", ".join(f"{name} {medians[name]:,.0f}/s" for name in methods)
          + f"; full/naive {medians['full'] / medians['naive']:.2f}x, "
          f"projection/naive {medians['projection'] / medians['naive']:.1f}x")
    result = {
        "naive_alerts_per_s": round(best["naive"], 1),
        "full_alerts_per_s": round(best["full"], 1),
        "projection_alerts_per_s": round(best["projection"], 1),
        "full_vs_naive": round(best["full"] / best["naive"], 3),
        "projection_vs_naive": round(best["projection"] / best["naive"], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
