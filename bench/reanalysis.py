"""Reanalysis at scale: a filter that reads the history (`prv_candidates`), columnar or per alert, over archived
nights, on Dask, and live.

One run simulates `--nights` nights of `--alerts` alerts in all (three programmes each, as ZTF) and archives them
the way the archiver lays them out (a tarball and a Parquet file per night and programme, Parquet rows decoded by
the archiver's own `AlertDecoder`), once: kept in .alertdist/bench/ and reused. Then, with the `brightening`
filter below (per-alert and columnar versions, the same passes; checked before timing):
  columnar_vs_per_alert  alerts/s of the columnar filter over the Parquet files (only its columns read) against
                         the per-alert filter over the same nights' tarballs (`run_batch`, projection decode up to
                         the history), both in this process
  dask_2_vs_1            the offline-filter flow (Prefect's Dask task runner, a local cluster, one task per night's
                         Parquet file) with the per-alert filter, 2 workers against 1, wall time of the whole flow
                         (cluster start included); the columnar flow is timed too, for information
  live_columnar_vs_per_alert  alerts/s of `run_live` with the columnar filter (each consumed batch decoded to
                         Arrow) against the per-alert runner, on a private broker, over `--live-alerts` of the
                         first night's alerts (processing rate: first alert to last commit)
Best of `--rounds` counts (the machine is shared); the last line printed is one JSON object.

Run from the repository root: .venv/bin/python bench/reanalysis.py [--alerts 200000] [--nights 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from _common import private_broker, private_prefect_server, say
from alertdist.access.readers import read_columns, tarball_alerts
from alertdist.archive.parquet import ParquetPartWriter, parquet_path
from alertdist.archive.tarball import TarballWriter, tarball_name
from alertdist.avro import codec
from alertdist.avro.arrow import night_table_columns, packet_headers, writer_schema_of
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.filters import alert_filter, load_filter
from alertdist.filters.batch import run_batch, run_columnar
from alertdist.filters.columnar import wanted_columns
from alertdist.filters.live import LiveOptions, run_live
from alertdist.kafka.clients import admin_client
from alertdist.kafka.producer import CountingProducer
from alertdist.nights.dates import jd_to_unix
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.settings import Settings
from alertdist.simulate.night import simulate_night

FIRST_NIGHT = dt.date(2023, 10, 1)
FILTERS = {"per_alert": "reanalysis:brightening", "columnar": "reanalysis:brightening_columnar"}
TARGETS = {"columnar_vs_per_alert": 20.0, "dask_2_vs_1": 1.5, "live_columnar_vs_per_alert": 3.0}


# ---------------------------------------------------------------------------------------- the filter


@alert_filter(name="brightening", fields=("objectId", "candidate", "prv_candidates"))
def brightening(alert: dict):
    """At least 3 earlier detections in the same band within 30 days, and now >= 0.3 mag brighter than the
    brightest of them. Annotates how many and by how much."""
    c = alert["candidate"]
    earlier = [
        p["magpsf"]
        for p in alert["prv_candidates"] or ()
        if p["magpsf"] is not None and p["fid"] == c["fid"] and c["jd"] - p["jd"] <= 30.0
    ]
    if len(earlier) < 3 or min(earlier) - c["magpsf"] < 0.3:
        return False
    return True, {"n_prev": len(earlier), "rise": round(min(earlier) - c["magpsf"], 3)}


@alert_filter(
    name="brightening",
    columnar=True,
    columns=("fid", "jd", "magpsf", "prv_candidates.magpsf", "prv_candidates.fid", "prv_candidates.jd"),
)
def brightening_columnar(table: pa.Table):
    """`brightening` on a table: the history flattened once, per-row counts and minima with numpy."""
    history = table["prv_candidates"].combine_chunks()
    row = pc.list_parent_indices(history).to_numpy()
    earlier = pc.list_flatten(history)
    mag = earlier.field("magpsf").cast(pa.float64()).to_numpy(zero_copy_only=False)
    fid, jd = table["fid"].to_numpy(), table["jd"].to_numpy()
    same = (earlier.field("fid").to_numpy(zero_copy_only=False) == fid[row]) & ~np.isnan(mag)
    same &= jd[row] - earlier.field("jd").to_numpy(zero_copy_only=False) <= 30.0
    count = np.bincount(row[same], minlength=table.num_rows)
    brightest = np.full(table.num_rows, np.inf)
    np.minimum.at(brightest, row[same], mag[same])
    rise = brightest - table["magpsf"].cast(pa.float64()).to_numpy()
    passed = (count >= 3) & (rise >= 0.3)
    rounded = np.full(table.num_rows, None, dtype=object)
    rounded[passed] = [round(float(x), 3) for x in rise[passed]]
    return passed, {"n_prev": count, "rise": rounded}


# ---------------------------------------------------------------------------------------- the nights


def bench_archive(folder: Path, alerts: int, nights: int, seed: int) -> tuple[Path, list[dt.date]]:
    """The simulated nights as an archive root (tarballs + Parquet), made once per (size, nights, seed)."""
    root = folder / f"reanalysis-{alerts}-{nights}n-seed{seed}"
    dates = [FIRST_NIGHT + dt.timedelta(days=i) for i in range(nights)]
    for i, night in enumerate(dates):
        done = root / f".night-{night:%Y%m%d}-complete"
        if not done.exists():
            archive_simulated_night(root, night, alerts // nights, seed + i)
            done.touch()
    return root, dates


def archive_simulated_night(root: Path, night: dt.date, n: int, seed: int, batch: int = 2000) -> None:
    """Stream a simulated night into one tarball and one Parquet file per programme (the archive's layout)."""
    started, writers = time.monotonic(), {}
    naming = Settings.load().naming
    scratch = Path(tempfile.mkdtemp(prefix="bench-reanalysis-"))
    try:
        for made, alert in enumerate(simulate_night(n, night=night, seed=seed), 1):
            programid = codec.peek(alert.packet).programid
            if programid not in writers:
                writers[programid] = _ProgrammeWriter(root, night, naming.programmes[programid], programid, scratch)
            writers[programid].add(alert, batch)
            if made % 10_000 == 0:
                say(f"  night {night:%Y%m%d}: simulated {made}/{n} ({made / (time.monotonic() - started):,.0f}/s)")
        for writer in writers.values():
            writer.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"archived simulated night {night:%Y%m%d} ({n} alerts) in {time.monotonic() - started:.0f} s")


class _ProgrammeWriter:
    def __init__(self, root: Path, night: dt.date, programme: str, programid: int, scratch: Path) -> None:
        self.tar_path = root / tarball_name("ztf", programme, night)
        self.pq_path = root / parquet_path(night, programid)
        self.pq_path.parent.mkdir(parents=True, exist_ok=True)
        self.tar_file = open(self.tar_path, "wb")
        self.tarball = TarballWriter(self.tar_file)
        self.scratch, self.pending, self.decoder, self.table = scratch, [], None, None

    def add(self, alert, batch: int) -> None:
        self.tarball.add(f"{alert.candid}.avro", alert.packet, jd_to_unix(alert.jd))
        self.pending.append(alert.packet)
        if len(self.pending) >= batch:
            self._flush()

    def _flush(self) -> None:
        if self.decoder is None:  # a simulated night is written in one schema version: one header
            headers = packet_headers(self.pending[:1])
            columns = night_table_columns(writer_schema_of(h) for h in headers)
            self.decoder = AlertDecoder(columns, self.scratch, headers=headers)
            self.pq_file = open(self.pq_path, "wb")
            self.table = ParquetPartWriter(self.pq_file, self.decoder.schema)
        self.table.write(self.decoder.decode(self.pending, [codec.peek(p).candid for p in self.pending]))
        self.pending = []

    def close(self) -> None:
        if self.pending:
            self._flush()
        self.tarball.close()
        self.tar_file.close()
        self.table.close()
        self.pq_file.close()
        self.decoder.close()


# ---------------------------------------------------------------------------------------- measuring


def per_alert_over_tarballs(root: Path) -> tuple[int, float, set]:
    started, read, passes = time.perf_counter(), 0, set()
    per_alert = load_filter(FILTERS["per_alert"])
    for tarball in sorted(root.glob("*.tar.gz")):
        result = run_batch(per_alert, ((a.name, a.packet) for a in tarball_alerts(str(tarball))))
        read += result.read
        passes |= {(c, t) for c, t in zip(result.table["candid"].to_pylist(), result.annotation_texts)}
    return read, time.perf_counter() - started, passes


def columnar_over_parquet(root: Path) -> tuple[int, float, set]:
    started, read, passes = time.perf_counter(), 0, set()
    columnar = load_filter(FILTERS["columnar"])
    for path in sorted(root.glob("parquet/night=*/programid=*/*.parquet")):
        result = run_columnar(columnar, read_columns(str(path), wanted_columns(columnar)))
        read += result.read
        passes |= {(c, t) for c, t in zip(result.table["candid"].to_pylist(), result.annotation_texts)}
    return read, time.perf_counter() - started, passes


def dask_flow(root: Path, nights: list[dt.date], workers: int, columnar: bool) -> tuple[float, int]:
    from alertdist.flows.offline_filter import offline_filter

    out = Path(tempfile.mkdtemp(prefix="bench-reanalysis-out-"))
    try:
        started = time.perf_counter()
        summary = offline_filter(
            FILTERS["columnar" if columnar else "per_alert"],
            str(out),
            nights=[f"{nights[0]:%Y%m%d}..{nights[-1]:%Y%m%d}"],
            archive=str(root),
            columnar=columnar,
            workers=workers,
        )
        return time.perf_counter() - started, summary["passed"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def publish_closed_night(bootstrap: str, naming: TopicNaming, night: dt.date, packets: list[bytes]) -> None:
    """The packets (of every programme) into programme 1's topic of ``night`` (14 partitions, keyed by objectId),
    then the night closed."""
    ensure_night_topics(admin_client(bootstrap), naming, night, TopicSettings(partitions=14), programmes=[1])
    topic = naming.programme_topic(night, 1)
    out = CountingProducer(bootstrap)
    for packet in packets:
        info = codec.peek(packet)
        out.produce(topic, packet, info.objectId.encode(), [("alertdist.candid", str(info.candid).encode())])
    out.finish(120)
    mark_night(bootstrap, naming, NightState(f"{night:%Y%m%d}", "closed", end_offsets(bootstrap, [topic])))


def live_rates(root: Path, night: dt.date, n: int, rounds: int) -> dict[str, list[float]]:
    every = (a.packet for t in sorted(root.glob(f"*_{night:%Y%m%d}.tar.gz")) for a in tarball_alerts(str(t)))
    packets = [packet for _, packet in zip(range(n), every)]
    rates: dict[str, list[float]] = {"per_alert": [], "columnar": []}
    with private_broker("bench-reanalysis-", heap="1g") as cluster:
        bootstrap, naming = cluster.bootstrap_servers, TopicNaming(survey="bench", programmes={1: "public"})
        publish_closed_night(bootstrap, naming, night, packets)
        say(f"live: {len(packets)} alerts published to {bootstrap}")
        for r in range(1, rounds + 1):
            for kind in ("per_alert", "columnar") if r % 2 else ("columnar", "per_alert"):
                report = run_live(
                    FILTERS[kind],
                    night,
                    bootstrap_servers=bootstrap,
                    naming=naming,
                    options=LiveOptions(state_poll_s=0.5, done_check_s=0.2),
                    group_id=f"bench-{kind}-{r}",
                )
                assert report.read == len(packets) and report.status == "finished", report
                rates[kind].append(report.processing_rate)
                say(f"  round {r} live {kind}: {report.processing_rate:,.0f} alerts/s ({report.passed} passed)")
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=200_000, help="alerts in all the nights (default 200000)")
    parser.add_argument("--nights", type=int, default=4, help="simulated nights (default 4)")
    parser.add_argument("--live-alerts", type=int, default=20_000, help="alerts of the first night run live")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    root, nights = bench_archive(Settings.load().home / "bench", args.alerts, args.nights, args.seed)
    say(f"archive {root}: {len(nights)} nights")

    per_alert, columnar = [], []
    for r in range(1, args.rounds + 1):
        n, seconds, per_alert_passes = per_alert_over_tarballs(root)
        per_alert.append(n / seconds)
        m, seconds, columnar_passes = columnar_over_parquet(root)
        columnar.append(m / seconds)
        if (m, columnar_passes) != (n, per_alert_passes):
            raise RuntimeError(
                f"the columnar filter disagrees: {m} vs {n} read, {len(columnar_passes)} vs "
                f"{len(per_alert_passes)} passed"
            )
        say(
            f"round {r}: per-alert over tarballs {per_alert[-1]:,.0f}/s, columnar over Parquet {columnar[-1]:,.0f}/s "
            f"({n} alerts, {len(per_alert_passes)} passed, identical)"
        )

    dask: dict[str, list[float]] = {}
    with private_prefect_server("bench-reanalysis-prefect-") as server:
        say(f"Prefect server {server.api_url}")
        for r in range(1, args.rounds + 1):
            for workers in (1, 2) if r % 2 else (2, 1):
                for kind in ("per_alert", "columnar"):
                    seconds, passed = dask_flow(root, nights, workers, kind == "columnar")
                    dask.setdefault(f"{kind}_{workers}", []).append(seconds)
                    say(f"round {r}: Dask {kind}, {workers} worker(s): {seconds:.1f} s ({passed} passed)")

    live = live_rates(root, nights[0], args.live_alerts, args.rounds)

    best = {k: max(v) for k, v in (("per_alert", per_alert), ("columnar", columnar))}
    results = {
        "bench": "reanalysis",
        "alerts": args.alerts,
        "nights": args.nights,
        "per_alert_tarballs_alerts_s": round(best["per_alert"]),
        "columnar_parquet_alerts_s": round(best["columnar"]),
        "columnar_vs_per_alert": round(best["columnar"] / best["per_alert"], 2),
        "dask_seconds": {k: round(min(v), 1) for k, v in sorted(dask.items())},
        "dask_2_vs_1": round(min(dask["per_alert_1"]) / min(dask["per_alert_2"]), 2),
        "dask_2_vs_1_columnar": round(min(dask["columnar_1"]) / min(dask["columnar_2"]), 2),
        "live_per_alert_alerts_s": round(max(live["per_alert"])),
        "live_columnar_alerts_s": round(max(live["columnar"])),
        "live_columnar_vs_per_alert": round(max(live["columnar"]) / max(live["per_alert"]), 2),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    results["targets_met"] = {k: results[k] >= target for k, target in TARGETS.items()}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
