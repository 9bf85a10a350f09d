"""Simulated ZTF nights against what real ZTF packets look like, and the drop-folder writer. No Kafka needed."""

from __future__ import annotations

import gzip
import io
import itertools
import re
import statistics
import threading
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import fastavro
import numpy as np
import pytest

from alertdist import schemas
from alertdist.avro import codec
from alertdist.simulate.cutouts import STAMP_SIZE, encode_stamp, read_stamp, read_stamp_header, set_gzip_mtime
from alertdist.simulate.night import DEFAULT_PROGRAMME_WEIGHTS, night_window, simulate_night, write_drop_folder
from tests.conftest import SHARED_DATA as DATA
from tests.conftest import require_real_data

REAL_DIRS = [DATA / "ztf-alerts" / "20231012", DATA / "ztf-alerts" / "20200202"]
NIGHT = date(2023, 10, 12)
N_NIGHT = 900
NID_EPOCH_JD = 2457754.5


@pytest.fixture(scope="module")
def night():
    """One simulated night and its decoded records (the expensive part, shared by most tests)."""
    alerts = list(simulate_night(N_NIGHT, night=NIGHT, seed=3))
    return alerts, [codec.decode(a.packet) for a in alerts]


@pytest.fixture(scope="module")
def real_candidates():
    require_real_data("compares the simulator's value ranges with ZTF's own packets")
    paths = [p for d in REAL_DIRS for p in sorted(d.glob("*.avro"))]
    return [codec.decode(p.read_bytes())["candidate"] for p in paths]


def _by_exposure(alerts):
    groups = defaultdict(list)
    for a in alerts:
        groups[a.exposure].append(a)
    return [groups[k] for k in sorted(groups)]


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_and_another_seed_another_night():
    first = [a.packet for a in simulate_night(80, night=NIGHT, seed=11)]
    again = [a.packet for a in simulate_night(80, night=NIGHT, seed=11)]
    other = [a.packet for a in simulate_night(80, night=NIGHT, seed=12)]
    assert len(first) == 80
    assert first == again
    assert len(set(first) & set(other)) == 0


# ------------------------------------------------------------------------------------ packets


def test_every_packet_decodes_and_a_sample_validates_strictly_against_4_02(night):
    alerts, records = night
    schema = fastavro.parse_schema(schemas.load_schema("4.02"))
    assert all(r["schemavsn"] == "4.02" and r["candid"] == a.candid for a, r in zip(alerts, records))
    assert all(codec.schema_version_of(a.packet) == "4.02" for a in alerts)
    for alert in alerts[:: max(1, len(alerts) // 40)]:  # fastavro's own reader and validator cost ~15 ms a packet
        (record,) = list(fastavro.reader(io.BytesIO(alert.packet)))
        assert fastavro.validate(record, schema, raise_errors=True)
        assert record == codec.decode(alert.packet)


def test_packets_weigh_what_real_ones_weigh(night):
    sizes = [len(a.packet) for a in night[0]]
    assert min(sizes) >= 40_000 and max(sizes) <= 110_000
    assert 60_000 <= statistics.median(sizes) <= 85_000


def test_older_schema_versions_get_their_own_fields():
    for version in ("3.3", "3.0"):
        alerts = list(simulate_night(40, night=NIGHT, seed=5, schema_version=version, programme_weights={2: 1.0}))
        schema = fastavro.parse_schema(schemas.load_schema(version))
        (record,) = list(fastavro.reader(io.BytesIO(alerts[0].packet)))
        assert fastavro.validate(record, schema, raise_errors=True)
        assert record["schemavsn"] == version and "fp_hists" not in record
        assert {a.programid for a in alerts} == {2}


# ------------------------------------------------------------------------------------ exposures


def test_alerts_of_an_exposure_share_time_and_image_identity(night):
    alerts, records = night
    for group in _by_exposure(alerts):
        assert len({(a.jd, a.field, a.fid, a.programid) for a in group}) == 1
        assert len({a.pid // 10_000 for a in group}) == 1  # each readout quadrant has its own pid, as in ZTF
    for a, r in zip(alerts, records):
        c = r["candidate"]
        assert (c["jd"], c["pid"], c["candid"], c["rcid"], c["field"], c["fid"]) == (
            a.jd,
            a.pid,
            a.candid,
            a.rcid,
            a.field,
            a.fid,
        )
        assert str(c["candid"]).startswith(str(c["pid"])) and c["candid"] // 10**6 == c["pid"]
        assert c["candid"] % 10**6 // 1000 == (15 if c["isdiffpos"] == "t" else 10) and c["candid"] % 1000 == c["tblid"]
        assert c["nid"] == int(c["jd"] - NID_EPOCH_JD) and str(c["pid"]).startswith(str(c["nid"]))
        assert 0 <= c["rcid"] <= 63 and c["pid"] % 10_000 == c["rcid"] * 100 + 15
        band = {1: "g", 2: "r", 3: "i"}[c["fid"]]
        assert f"_{c['field']:06d}_z{band}_c{c['rcid'] // 4 + 1:02d}_o_q{c['rcid'] % 4 + 1}_" in c["pdiffimfilename"]
    assert len({a.candid for a in alerts}) == len(alerts)


def test_the_pid_and_candid_rules_are_ztfs_own():
    """The rules the simulator writes by, checked on every real detection (candidate and history)."""
    from alertdist.simulate.ids import pid

    require_real_data("checks the simulator's rules on ZTF's own detections")
    paths = [p for d in REAL_DIRS for p in sorted(d.glob("*.avro"))]
    rows = []
    for path in paths:
        record = codec.decode(path.read_bytes())
        rows += [record["candidate"]] + [p for p in record["prv_candidates"] if p["candid"] is not None]
    # 2 of the 165 differ by one in the time digits: jd is rounded before ZTF forms the pid.
    assert sum(pid(c["jd"], c["rcid"]) == c["pid"] for c in rows) >= 0.98 * len(rows)
    assert all(c["candid"] // 10**6 == c["pid"] and c["nid"] == int(c["jd"] - NID_EPOCH_JD) for c in rows)
    assert all(c["candid"] % 1000 == c["tblid"] for c in rows)
    positive = [c["candid"] % 10**6 // 1000 for c in rows if c["isdiffpos"] in ("t", "1")]  # 3.x also wrote '1'
    negative = [c["candid"] % 10**6 // 1000 for c in rows if c["isdiffpos"] in ("f", "0")]
    assert set(positive) == {15} and Counter(negative).most_common(1)[0][0] == 10


def test_exposures_follow_ztf_cadence_from_evening_twilight(night):
    groups = _by_exposure(night[0])
    assert 10 <= len(groups) <= 40
    jds = [g[0].jd for g in groups]
    evening, morning = night_window(NIGHT)
    assert 2460230.55 < evening < jds[0] < evening + 0.01 and jds[-1] < morning
    gaps = np.diff(jds) * 86400.0
    assert gaps.min() >= 30.0 and 35.0 <= float(np.median(gaps)) <= 50.0
    counts = sorted(len(g) for g in groups)
    assert counts[-1] >= 2.5 * statistics.median(counts)  # heavy-tailed: a few crowded exposures


def test_a_big_night_has_about_two_hundred_alerts_per_exposure():
    # Only the plan is looked at: counting exposures does not need the packets built.
    from alertdist.simulate.plan import exposure_count

    window = night_window(NIGHT)
    assert 10 <= exposure_count(2000, window) <= 40
    assert 300 <= exposure_count(100_000, window) <= 700


def test_programme_mix_follows_the_weights(night):
    alerts = night[0]
    shares = Counter(a.programid for a in alerts)
    for programme, weight in DEFAULT_PROGRAMME_WEIGHTS.items():
        assert abs(shares[programme] / len(alerts) - weight) < 0.08, shares
    assert all(r["candidate"]["programid"] == a.programid for a, r in zip(alerts, night[1]))


# ------------------------------------------------------------------------------------ objects


def test_objects_recur_with_growing_histories(night):
    alerts, records = night
    assert all(re.fullmatch(r"ZTF\d{2}[a-z]{7}", a.objectId) for a in alerts)
    seen = defaultdict(list)
    for a, r in zip(alerts, records):
        seen[a.objectId].append(r)
    repeated = {k: v for k, v in seen.items() if len(v) > 1}
    assert len(repeated) >= 20
    for detections in repeated.values():
        for earlier, later in itertools.pairwise(detections):
            assert later["candidate"]["jd"] > earlier["candidate"]["jd"]
            assert len(later["prv_candidates"]) > len(earlier["prv_candidates"])
            assert len(later["fp_hists"]) > len(earlier["fp_hists"])
            assert earlier["candid"] in {p["candid"] for p in later["prv_candidates"]}
            assert later["candidate"]["ndethist"] > earlier["candidate"]["ndethist"]
            assert abs(later["candidate"]["ra"] - earlier["candidate"]["ra"]) < 1 / 3600


def test_histories_look_like_ztf_ones(night):
    records = night[1]
    for r in records:
        jd = r["candidate"]["jd"]
        prv = r["prv_candidates"]
        assert [p["jd"] for p in prv] == sorted(p["jd"] for p in prv)
        assert all(jd - 30.0 <= p["jd"] < jd for p in prv)
        assert all(p["isdiffpos"] is None and p["magpsf"] is None for p in prv if p["candid"] is None)
        fp = [f["jd"] for f in r["fp_hists"]]
        assert fp == sorted(fp, reverse=True)  # newest first, as in ZTF's 4.x packets
    assert 15 <= statistics.median(len(r["prv_candidates"]) for r in records) <= 50
    assert 8 <= statistics.median(len(r["fp_hists"]) for r in records) <= 30
    assert any(sum(p["candid"] is not None for p in r["prv_candidates"]) >= 10 for r in records)


def test_downstream_filters_have_something_to_find(night):
    candidates = [r["candidate"] for r in night[1]]
    n = len(candidates)
    new_transients = [
        c
        for c in candidates
        if c["rb"] > 0.65
        and c["drb"] > 0.8
        and c["isdiffpos"] == "t"
        and c["ndethist"] <= 5
        and (c["distpsnr1"] > 2 or 0 <= c["sgscore1"] < 0.5)
        and c["ssnamenr"] == "null"
    ]
    asteroids = [c for c in candidates if c["ssnamenr"] != "null"]
    assert len(new_transients) >= 0.02 * n
    assert 0.01 * n <= len(asteroids) <= 0.1 * n
    assert all(0 <= c["ssdistnr"] < 12 and c["ssmagnr"] > 0 and c["ssnamenr"].isdigit() for c in asteroids)
    assert all(c["ssdistnr"] == -999.0 and c["ssmagnr"] == -999.0 for c in candidates if c["ssnamenr"] == "null")
    assert any(c["rb"] < 0.5 and c["drb"] < 0.5 for c in candidates)  # and bogus ones to reject


# Candidate fields whose simulated values are compared with the real packets: the simulated median must lie within
# the real range and the simulated extremes within that range widened by its own span (ZTF's -999 "none" excluded).
KEY_FIELDS = (
    "magpsf",
    "sigmapsf",
    "diffmaglim",
    "rb",
    "drb",
    "fwhm",
    "classtar",
    "elong",
    "scorr",
    "chipsf",
    "magnr",
    "distnr",
    "sgscore1",
    "distpsnr1",
    "magzpsci",
    "ndethist",
    "ncovhist",
    "xpos",
    "ypos",
    "magap",
    "sky",
    "seeratio",
    "exptime",
    "sumrat",
)


def test_value_ranges_resemble_real_packets(night, real_candidates):
    simulated = [r["candidate"] for r in night[1]]
    for name in KEY_FIELDS:
        real = np.array([c[name] for c in real_candidates if c.get(name) is not None and c[name] > -900], float)
        sim = np.array([c[name] for c in simulated if c[name] is not None and c[name] > -900], float)
        span = max(real.max() - real.min(), 0.05 * abs(real.max()), 1e-3)
        low, high = real.min() - span, real.max() + span
        assert real.min() <= np.median(sim) <= real.max(), (name, np.median(sim), real.min(), real.max())
        assert low <= sim.min() and sim.max() <= high, (name, sim.min(), sim.max(), low, high)


# ------------------------------------------------------------------------------------ stamps


def test_stamps_are_real_fits_with_a_source_at_the_centre(night):
    alerts, records = night
    for a, r in list(zip(alerts, records))[::60]:
        for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            stamp = r[key]["stampData"]
            raw = gzip.decompress(stamp)
            assert len(raw) % 2880 == 0 and raw.startswith(b"SIMPLE  =                    T")
            cards = [raw[i : i + 80].decode("ascii") for i in range(0, 2880, 80)]
            assert [c[:8].strip() for c in cards[:7]] == [
                "SIMPLE",
                "BITPIX",
                "NAXIS",
                "NAXIS1",
                "NAXIS2",
                "BUNIT",
                "END",
            ]
            assert read_stamp_header(stamp) == {
                "SIMPLE": True,
                "BITPIX": -32,
                "NAXIS": 2,
                "NAXIS1": 63,
                "NAXIS2": 63,
                "BUNIT": "DN",
            }
            image = read_stamp(stamp)
            assert image.shape == (STAMP_SIZE, STAMP_SIZE) and image.dtype == np.float32
        assert r["cutoutScience"]["fileName"] == f"candid{a.candid}_pid{a.pid}_targ_sci.fits.gz"
        assert r["cutoutTemplate"]["fileName"] == f"candid{a.candid}_ref.fits.gz"
        difference = read_stamp(r["cutoutDifference"]["stampData"])
        centre = difference[29:34, 29:34]
        noise = np.nanmedian(np.abs(difference - np.nanmedian(difference))) * 1.4826
        assert np.nanmax(centre) > np.nanmedian(difference) + 5 * noise


def test_stamp_round_trip_and_mtime():
    image = np.random.default_rng(0).normal(100.0, 5.0, (STAMP_SIZE, STAMP_SIZE)).astype(np.float32)
    stamp = encode_stamp(image)
    assert np.array_equal(read_stamp(stamp), image) and stamp[9] == 3  # Unix OS byte, as in ZTF's stamps
    restamped = set_gzip_mtime(stamp, 1_700_000_000)
    assert int.from_bytes(restamped[4:8], "little") == 1_700_000_000
    assert gzip.decompress(restamped) == gzip.decompress(stamp)
    with pytest.raises(ValueError, match="no END card"):
        read_stamp(b"SIMPLE  = T".ljust(2880))


def test_reader_reads_real_ztf_stamps():
    require_real_data("reads the stamps ZTF itself wrote")
    paths = sorted(REAL_DIRS[0].glob("*.avro"))
    record = codec.decode(paths[0].read_bytes())
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        assert read_stamp(record[key]["stampData"]).shape == (63, 63)
        assert read_stamp_header(record[key]["stampData"])["BUNIT"] == "DN"


def test_templates_lend_their_stamps_and_shapes(packet_files):
    folder = packet_files[-1].parent  # ZTF's 4.01 packets of 20231012, or the made ones of the latest schema
    real = [codec.decode(p.read_bytes()) for p in sorted(folder.glob("*.avro"))]
    real_stamps = {r["cutoutDifference"]["stampData"][10:] for r in real}
    real_fwhm = {r["candidate"]["fwhm"] for r in real}
    alerts = list(simulate_night(30, night=NIGHT, seed=2, templates=folder))
    records = [codec.decode(a.packet) for a in alerts]
    assert all(r["cutoutDifference"]["stampData"][10:] in real_stamps for r in records if r["candidate"]["rb"] > 0.6)
    assert any(r["candidate"]["fwhm"] in real_fwhm for r in records)


# ------------------------------------------------------------------------------------ drop folder


def test_drop_folder_files_appear_only_complete(tmp_path):
    alerts = list(simulate_night(60, night=NIGHT, seed=4))
    expected = {f"{a.candid}.avro": a.packet for a in alerts}
    done = threading.Event()
    seen_bad = []

    def watch():
        while not done.is_set():
            for path in tmp_path.iterdir():
                if path.name.startswith("."):
                    continue
                data = path.read_bytes()
                if path.name not in expected or data != expected[path.name]:
                    seen_bad.append(path.name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        counts = write_drop_folder(alerts, tmp_path)
    finally:
        done.set()
        watcher.join()
    assert not seen_bad
    assert counts.files == len(alerts) and counts.bytes == sum(map(len, expected.values()))
    assert counts.exposures == len({a.exposure for a in alerts})
    assert {p.name for p in tmp_path.iterdir()} == set(expected)


def test_drop_folder_keeps_the_night_cadence_scaled_by_speed(tmp_path):
    alerts = list(simulate_night(60, night=NIGHT, seed=4))
    groups = _by_exposure(alerts)
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    progress = []
    write_drop_folder(
        alerts,
        tmp_path,
        speed=50.0,
        clock=lambda: now[0],
        sleep=sleep,
        progress=lambda n, a: progress.append((n, a.exposure, now[0])),
    )
    assert [n for n, _, _ in progress] == list(range(1, len(alerts) + 1))
    for group in groups:
        written_at = [t for _, exposure, t in progress if exposure == group[0].exposure]
        expected = (group[0].jd - groups[0][0].jd) * 86400.0 / 50.0
        assert written_at == [pytest.approx(expected)] * len(group)
    assert len(sleeps) == len(groups) - 1


def test_drop_folder_really_waits(tmp_path):
    alerts = list(simulate_night(20, night=NIGHT, seed=4))
    span = (alerts[-1].jd - alerts[0].jd) * 86400.0
    counts = write_drop_folder(alerts, tmp_path, speed=span / 0.3)
    assert 0.28 <= counts.seconds < 2.0 and counts.files == 20


def test_arguments_are_checked_before_anything_is_built():
    assert list(simulate_night(0, night=NIGHT)) == []
    with pytest.raises(ValueError, match="programme weights"):
        simulate_night(10, night=NIGHT, programme_weights={1: 0.0})
    with pytest.raises(ValueError, match=r"cannot simulate schema '9.9'"):
        simulate_night(10, night=NIGHT, schema_version="9.9")
    with pytest.raises(ValueError, match="speed"):
        write_drop_folder([], Path("unused"), speed=0)
