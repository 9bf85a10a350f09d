"""Latency and throughput of the archive service (`alertdist serve`) against the naive lookup, local and on S3.

Three simulated nights (default 20,000 alerts each, cached in .alertdist/bench/) are published to a private
broker on free ports and archived by the real archiver (tarballs, Parquet, manifest and the per-night index) to
a scratch folder. Then `alertdist serve --workers 2` runs over it (a child process on a free port) and, over
HTTP with httpx:

- `alert_ms`: random `GET /alerts/{candid}` one at a time (median, p99), every answer checked byte for byte
  against the archived packet; `alert_rps`: the same from 8 client threads for `--seconds`.
- `object_ms`: `GET /objects/{objectId}` of random objects (their history over the three nights).
- `cutout_png_ms`: `GET /alerts/{candid}/cutouts/science.png` of alerts not asked for before (nothing cached).
- `scan_ms`: the naive way, for a few random candids: open the night's tarball and read it until the member;
  `lookup_vs_scan` = scan median / alert median.
- S3: the same archive in moto's S3 server; the service in-process over ``s3://`` reports the bytes it read per
  lookup (`s3_bytes_per_lookup`, ranges, against the tarball's size) and the latency.

Targets (issue 27): alert median < 50 ms, p99 < 250 ms, >= 200 req/s with 2 workers; object median < 100 ms;
cutout PNG median < 100 ms; lookup_vs_scan >= 100. The machine is shared: the load average is recorded.

Run from the repository root: .venv/bin/python bench/serve.py [--alerts 20000] [--nights 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from _common import private_broker, say
from alertdist.archive import ArchiveOptions, archive_night
from alertdist.archive.tarball import read_members
from alertdist.avro import codec
from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client
from alertdist.kafka.producer import CountingProducer
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.service.rights import TokenStore
from alertdist.simulate.night import simulate_night

REPO = Path(__file__).resolve().parents[1]
FIRST_NIGHT = dt.date(2023, 10, 12)


def night_packets(size: int, night: dt.date, cache: Path) -> list[bytes]:
    """A simulated night, made once and kept (length-prefixed packets)."""
    path = cache / f"serve-night-{night:%Y%m%d}-{size}.packets"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        temporary = path.with_suffix(f".tmp-{os.getpid()}")
        with open(temporary, "wb") as out:
            for alert in simulate_night(size, night=night, seed=night.toordinal()):
                out.write(len(alert.packet).to_bytes(4, "little") + alert.packet)
        os.replace(temporary, path)
        say(f"simulated night {night:%Y%m%d} ({size} alerts) in {time.monotonic() - started:.0f} s")
    packets, raw = [], path.read_bytes()
    position = 0
    while position < len(raw):
        n = int.from_bytes(raw[position : position + 4], "little")
        packets.append(raw[position + 4 : position + 4 + n])
        position += 4 + n
    return packets


def publish(bootstrap: str, naming: TopicNaming, night: dt.date, packets: list[bytes]) -> None:
    ensure_night_topics(admin_client(bootstrap), naming, night, TopicSettings(partitions=4))
    out = CountingProducer(bootstrap)
    for packet in packets:
        info = codec.peek(packet)
        now = b"%d" % (time.time_ns() // 1_000_000)
        headers = [
            ("alertdist.produced_ms", now),
            ("alertdist.published_ms", now),
            ("alertdist.candid", b"%d" % info.candid),
        ]
        out.produce(naming.programme_topic(night, info.programid), packet, info.objectId.encode(), headers)
    out.finish(300)
    topics = list(naming.programme_topics(night).values())
    mark_night(bootstrap, naming, NightState(f"{night:%Y%m%d}", "closed", end_offsets(bootstrap, topics)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path)
    return (time.perf_counter() - started) * 1e3, response


def start_service(root: Path, home: Path, survey: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = kafka_local.free_port()
    env = {**os.environ, "ALERTDIST_HOME": str(home), "ALERTDIST_SURVEY": survey}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alertdist.cli.main",
            "serve",
            "--archive",
            str(root),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--access-log",
            str(home / "access.log"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return child, base
        except httpx.HTTPError:
            time.sleep(0.3)
    child.kill()
    raise RuntimeError(f"the service did not start: {child.stdout.read()[-2000:]}")


def throughput(base: str, candids: list[int], seconds: float, headers: dict, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
            while time.monotonic() < stop:
                if client.get(f"/alerts/{rng.choice(candids)}").status_code == 200:
                    done[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.monotonic() - started)


def scan_lookup(tarball: Path, candid: int) -> bytes:
    with open(tarball, "rb") as f:
        for member in read_members(f):
            if member.name == f"{candid}.avro":
                return member.data
    raise KeyError(candid)


def s3_run(root: Path, survey: str, tokens: Path, auth: dict, sample: list[tuple[int, bytes, str]]) -> dict:
    from alertdist.infra.s3_local import local_s3
    from alertdist.service.app import ServiceConfig
    from alertdist.service.server import serving_in_thread

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log, a line per range read
    with local_s3() as s3:
        url = s3.upload_folder(root, "bench", "archive")
        config = ServiceConfig(url, str(tokens), storage_options=s3.storage_options, survey=survey)
        with serving_in_thread(config) as (base, app), httpx.Client(base_url=base, timeout=60, headers=auth) as http:
            http.get(f"/alerts/{sample[0][0]}")  # loads the indexes
            store = app.state.store
            before, times = store.bytes_read, []
            for candid, packet, _ in sample:
                ms, response = timed(http, f"/alerts/{candid}")
                if response.content != packet:
                    raise RuntimeError(f"S3: alert {candid} came back different")
                times.append(ms)
            per_lookup = (store.bytes_read - before) / len(sample)
        tarball = max(p.stat().st_size for p in root.glob("*.tar.gz"))
        return {
            "s3_alert_ms_median": round(statistics.median(times), 1),
            "s3_bytes_per_lookup": round(per_lookup),
            "s3_largest_tarball_bytes": tarball,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per night")
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--lookups", type=int, default=400, help="sequential alert lookups timed")
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    cache = REPO / ".alertdist" / "bench"
    nights = [FIRST_NIGHT + dt.timedelta(days=i) for i in range(args.nights)]
    packets = {night: night_packets(args.alerts, night, cache) for night in nights}
    naming = TopicNaming(survey=f"bs{uuid.uuid4().hex[:6]}")
    work = Path(tempfile.mkdtemp(prefix="alertdist-bench-serve-"))
    child = None
    try:
        root = work / "archive"
        with private_broker("alertdist-bench-serve-") as cluster:
            for night in nights:
                started = time.monotonic()
                publish(cluster.bootstrap_servers, naming, night, packets[night])
                archive_night(cluster.bootstrap_servers, naming, night, str(root), ArchiveOptions())
                say(
                    f"night {night:%Y%m%d}: {len(packets[night])} alerts published and archived in "
                    f"{time.monotonic() - started:.0f} s"
                )
        index_bytes = sum(p.stat().st_size for p in root.glob("index/**/*.parquet"))
        by_candid = {}
        for night in nights:
            for packet in packets[night]:
                info = codec.peek(packet)
                by_candid[info.candid] = (packet, info.objectId, info.programid, night)
        public = [c for c, v in by_candid.items() if v[2] == 1]
        rng = random.Random(7)

        say(f"index: {index_bytes:,} bytes for {len(by_candid)} alerts; starting the service (2 workers)")
        token = TokenStore(work / "home" / "service" / "tokens.json").add("bench", "caltech", "bulk")
        auth = {"Authorization": f"Bearer {token}"}  # the bulk tier: the anonymous one allows 20 req/s
        child, base = start_service(root, work / "home", naming.survey, workers=2)
        say(f"service up at {base}; timing lookups")
        with httpx.Client(base_url=base, timeout=60, headers=auth) as http:
            for _ in range(20):  # each worker loads the indexes once
                http.get(f"/alerts/{rng.choice(public)}")
            alert_ms = []
            for candid in rng.sample(public, min(args.lookups, len(public))):
                ms, response = timed(http, f"/alerts/{candid}")
                if response.status_code != 200 or response.content != by_candid[candid][0]:
                    raise RuntimeError(f"alert {candid}: {response.status_code}, not the archived packet")
                alert_ms.append(ms)
            objects = sorted({by_candid[c][1] for c in public})
            object_ms = [timed(http, f"/objects/{o}")[0] for o in rng.sample(objects, min(100, len(objects)))]
            fresh = rng.sample(public, 100)
            cutout_ms = []
            for candid in fresh:
                ms, response = timed(http, f"/alerts/{candid}/cutouts/science.png")
                if not response.content.startswith(b"\x89PNG"):
                    raise RuntimeError(f"cutout of {candid}: {response.status_code}")
                cutout_ms.append(ms)
        say("timing throughput (8 client threads)")
        rps = throughput(base, public, args.seconds, auth)
        say(f"{rps:.0f} req/s; timing the naive scan")
        scan_ms = []
        for candid in rng.sample(public, 5):
            night = by_candid[candid][3]
            tarball = root / f"{naming.survey}_public_{night:%Y%m%d}.tar.gz"
            started = time.perf_counter()
            if scan_lookup(tarball, candid) != by_candid[candid][0]:
                raise RuntimeError("the scan found another packet")
            scan_ms.append((time.perf_counter() - started) * 1e3)
        child.terminate()
        child.wait(30)
        child = None
        index_rows, column_bytes = 0, {}
        for path in root.glob("index/**/*.parquet"):
            meta = pq.ParquetFile(path).metadata
            index_rows += meta.num_rows
            for g in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    column = meta.row_group(g).column(c)
                    column_bytes[column.path_in_schema] = (
                        column_bytes.get(column.path_in_schema, 0) + column.total_compressed_size
                    )
        result = {
            "nights": len(nights),
            "alerts": len(by_candid),
            "workers": 2,
            "alert_ms_median": round(statistics.median(alert_ms), 2),
            "alert_ms_p99": round(percentile(alert_ms, 0.99), 2),
            "alert_rps": round(rps, 1),
            "object_ms_median": round(statistics.median(object_ms), 2),
            "cutout_png_ms_median": round(statistics.median(cutout_ms), 2),
            "scan_ms_median": round(statistics.median(scan_ms), 1),
            "lookup_vs_scan": round(statistics.median(scan_ms) / statistics.median(alert_ms), 1),
            "index_bytes_per_alert": round(index_bytes / index_rows, 2),
            "index_mb_per_1_2M_alerts": round(index_bytes / index_rows * 1.2e6 / 1e6, 1),
            "index_bytes_per_alert_by_column": {k: round(v / index_rows, 2) for k, v in column_bytes.items()},
            "load_average": os.getloadavg(),
        }
        if not args.no_s3:
            say("uploading the archive to moto's S3 server and serving it from there")
            sample = [(c, by_candid[c][0], by_candid[c][1]) for c in rng.sample(public, 50)]
            result.update(s3_run(root, naming.survey, work / "home" / "service" / "tokens.json", auth, sample))
        print(json.dumps(result))
        return 0
    finally:
        if child is not None:
            child.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
