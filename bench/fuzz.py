"""A long fuzz run over the codec: how many bad inputs were tried, and what became of each.

Two phases, each in a child process so a crash (a segfault in compiled code) is caught, counted, its input saved,
and the run goes on:
  structured  the mutations of bench/fuzz_cases.py (truncations, bit flips, spliced junk, impossible lengths and
              counts in the header and inside the record, wrong schemas, random bytes) on real and simulated
              packets, drawn from a seeded RNG so any input can be rebuilt from (seed, index)
  atheris     coverage-guided byte fuzzing (libFuzzer via atheris, when installed) seeded with the real packets,
              over the Python code of alertdist.avro.container and alertdist.avro.codec
Every input goes through `codec.peek`, `codec.decode` and `codec.info_problem`. Outcomes: ok (a valid packet),
implausible (valid Avro, but a field the system computes with is unusable: set aside), refused (AlertPacketError,
the only allowed failure), error (any other exception: a bug), slow (> 1 s), crash (the process died). The
structured phase also checks that inputs which cannot be valid were refused, and implausible ones were not taken
as ok (`missed`); every tenth of its inputs is a valid packet with one implausible value (NaN jd, ...).
Then a directed check: the self-referencing schema with deeply nested data (`recursive_schema_packet`).

Run from the repository root: .venv/bin/python bench/fuzz.py [--seconds 120] [--seed 1] [--out test-output/fuzz]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SLOW_S = 1.0
CHILD_FLAG = "--child"


# --------------------------------------------------------------------------------------------- the child


def _base_packets() -> list[bytes]:
    import datetime as dt
    import tarfile

    from alertdist.publish.sources import simulated_packets

    packets = [p.packet for p in simulated_packets(6, night=dt.date(2023, 10, 12), seed=21)]
    shared = REPO.parent / "shared" / "data"
    if shared.is_dir():
        packets += [p.read_bytes() for p in sorted((shared / "ztf-alerts").glob("*/*.avro"))]
        with tarfile.open(shared / "ztf-archive" / "ztf_public_20180819_mod1000.tar.gz") as tar:
            packets += [tar.extractfile(m).read() for m in tar if m.isfile()]
    return packets


def _try(packet: bytes) -> tuple[str, str]:
    from alertdist.avro import codec

    started = time.perf_counter()
    try:
        info = codec.peek(packet)
        codec.decode(packet)
        problem = codec.info_problem(info)
        outcome, detail = ("implausible", problem[:60]) if problem else ("ok", "")
    except codec.AlertPacketError as e:
        outcome, detail = "refused", str(e).split(":")[0][:60]
    except Exception as e:  # a bug: only AlertPacketError may leave the codec
        outcome, detail = "error", f"{type(e).__name__}: {e}"[:200]
    if time.perf_counter() - started > SLOW_S:
        outcome = "slow"
    return outcome, detail


def structured_mutant(packets: list[bytes], seed: int, index: int):
    # bench/ is first on the path of a script run from it
    from fuzz_cases import IMPLAUSIBLE, implausible, random_mutant

    rng = random.Random(seed * 1_000_003 + index)
    packet = packets[rng.randrange(len(packets))]
    if index % 10 == 9:
        return implausible(packet, rng.choice(sorted(IMPLAUSIBLE)))
    return random_mutant(packet, rng)


def child_structured(seed: int, start: int, seconds: float, progress_path: Path) -> None:
    """Try inputs from ``start`` until time is up; the index in ``progress_path`` says which one was running."""
    packets = _base_packets()
    counts: Counter = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    fd = os.open(progress_path, os.O_RDWR | os.O_CREAT, 0o644)
    index = start
    while time.monotonic() < deadline:
        os.pwrite(fd, f"{index:>20}".encode(), 0)
        mutant = structured_mutant(packets, seed, index)
        outcome, detail = _try(mutant.packet)
        counts[outcome] += 1
        counts[f"kind:{mutant.kind.split('-')[0]}"] += 1
        if (mutant.must_fail or mutant.implausible) and outcome == "ok":
            counts["missed"] += 1
            errors.append(f"accepted {mutant.kind} (seed {seed}, index {index})")
        if outcome in ("error", "slow"):
            errors.append(f"{outcome} on {mutant.kind} (seed {seed}, index {index}): {detail}")
        index += 1
    os.close(fd)
    print(
        json.dumps(
            {
                "next": index,
                "counts": counts,
                "errors": errors[:20],
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def child_atheris(seconds: float, corpus: Path, stats_path: Path) -> None:
    import atheris

    with atheris.instrument_imports():
        from alertdist.avro import codec  # noqa: F401

    counts: Counter = Counter()

    def one_input(data: bytes) -> None:
        outcome, detail = _try(data)
        counts[outcome] += 1
        if sum(counts.values()) % 500 == 0:
            stats_path.write_text(json.dumps(counts))
        if outcome in ("error", "slow"):
            stats_path.write_text(json.dumps(counts))
            raise RuntimeError(f"{outcome}: {detail}")  # atheris saves the input and stops

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={int(seconds)}",
            "-rss_limit_mb=2048",
            "-max_len=300000",
            f"-artifact_prefix={corpus.parent}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


# -------------------------------------------------------------------------------------------- the parent


def run_structured(seconds: float, seed: int, out: Path) -> dict:
    progress = out / "structured.index"
    totals: Counter = Counter()
    errors, crashes = [], []
    start, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline - 1:
        progress.write_text(f"{start:>20}")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                CHILD_FLAG,
                "structured",
                str(seed),
                str(start),
                str(deadline - time.monotonic()),
                str(progress),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if child.returncode == 0:
            report = json.loads(child.stdout.strip().splitlines()[-1])
            totals.update(report["counts"])
            errors += report["errors"]
            totals["max_rss_mb"] = max(totals["max_rss_mb"], int(report["max_rss_mb"]))
            break
        index = int(progress.read_text())  # the input it died on
        mutant = structured_mutant(_base_packets(), seed, index)
        saved = out / f"crash-seed{seed}-index{index}.avro"
        saved.write_bytes(mutant.packet)
        crashes.append(f"{mutant.kind}: exit {child.returncode}, input saved in {saved}")
        totals["crash"] += 1
        print(f"  crash on input {index} ({mutant.kind}), exit {child.returncode}; continuing", flush=True)
        start = index + 1
    tried = sum(totals[k] for k in ("ok", "implausible", "refused", "error", "slow", "crash"))
    print(
        f"structured: {tried} inputs in {seconds:.0f} s: "
        + ", ".join(f"{k} {totals[k]}" for k in ("ok", "implausible", "refused", "missed", "error", "slow", "crash")),
        flush=True,
    )
    kinds = {k.removeprefix("kind:"): v for k, v in sorted(totals.items()) if k.startswith("kind:")}
    print(f"  by kind: {kinds}; child peak RSS {totals['max_rss_mb']} MB", flush=True)
    return {
        "inputs": tried,
        **{k: totals[k] for k in ("ok", "implausible", "refused", "missed", "error", "slow", "crash")},
        "by_kind": kinds,
        "max_rss_mb": totals["max_rss_mb"],
        "errors": errors[:10],
        "crashes": crashes[:10],
    }


def run_atheris(seconds: float, out: Path) -> dict:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris: not installed (pip install atheris); phase skipped", flush=True)
        return {"skipped": "atheris not installed"}
    corpus = out / "atheris-corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, packet in enumerate(_base_packets()[:12]):
        (corpus / f"seed-{i}.avro").write_bytes(packet)
    stats = out / "atheris.json"
    stats.write_text("{}")
    child = subprocess.run(
        [sys.executable, __file__, CHILD_FLAG, "atheris", str(seconds), str(corpus), str(stats)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    counts = Counter(json.loads(stats.read_text()))
    runs = next(
        (
            int(line.rsplit(":", 1)[1])
            for line in child.stderr.splitlines()
            if line.startswith("stat::number_of_executed_units")
        ),
        sum(counts.values()),
    )
    crashed = child.returncode != 0
    artifacts = sorted(p.name for p in out.glob("crash-*")) + sorted(p.name for p in out.glob("timeout-*"))
    print(
        f"atheris: {runs} inputs in {seconds:.0f} s (libFuzzer exit {child.returncode}); last counts "
        f"{dict(counts)}; corpus grew to {len(list(corpus.iterdir()))} inputs",
        flush=True,
    )
    if crashed:
        print(child.stderr[-1500:], flush=True)
    return {
        "inputs": runs,
        "counts": dict(counts),
        "exit": child.returncode,
        "artifacts": artifacts,
        "corpus": len(list(corpus.iterdir())),
    }


def run_directed(out: Path) -> dict:
    """The self-referencing schema, at growing nesting depths: refused (fine) or a crash (a bug)."""
    results = {}
    for depth in (1_000, 10_000, 100_000):
        script = (
            "import sys; from alertdist.avro import codec; from bench.fuzz_cases import recursive_schema_packet\n"
            f"p = recursive_schema_packet({depth})\n"
            "try:\n    codec.peek(p); print('ok')\nexcept codec.AlertPacketError as e:\n    print('refused')\n"
        )
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
        outcome = child.stdout.strip() if child.returncode == 0 else f"crash (exit {child.returncode})"
        results[str(depth)] = outcome
        print(f"recursive schema, nesting {depth}: {outcome}", flush=True)
    return results


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        if sys.argv[2] == "structured":
            child_structured(int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), Path(sys.argv[6]))
        else:
            child_atheris(float(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="total fuzzing time, split between the phases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "test-output" / "fuzz")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing the codec for {args.seconds:.0f} s (seed {args.seed}); crash inputs go to {args.out}", flush=True)
    structured = run_structured(args.seconds / 2, args.seed, args.out)
    coverage_guided = run_atheris(args.seconds / 2, args.out)
    directed = run_directed(args.out)
    print(
        json.dumps(
            {
                "bench": "fuzz",
                "seconds": args.seconds,
                "seed": args.seed,
                "structured": structured,
                "atheris": coverage_guided,
                "recursive_schema": directed,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
