"""Simulated ZTF nights: deterministic, realistic alert packets for tests at scale and for benchmarks.

Why simulate: the real packets we may use are a few dozen public alerts. The publisher, the archivers and the
filters need whole nights (10^5 alerts, three programmes, bursts per exposure, objects seen again and again)
that look like ZTF's to every consumer, and the same bytes on every run so that a failure can be replayed.

What the real packets pin down (checked in tests/test_simulate.py):
- nid = days since 2017-01-01 UT; pid = nid·10^9 + ⌊UT-day fraction·10^5⌋·10^4 + rcid·100 + 15, so the 64
  readout quadrants of one exposure share jd and nid but each has its own pid;
- candid = pid·10^6 + (15 for a positive subtraction, 10 for a negative one)·10^3 + tblid;
- objectId = 'ZTF' + the year of first detection + 7 letters from a counter (~57k new objects a day).

How it stays fast and small: gzipping stamps is the costly part of building an alert, so a night draws them from
a pool made once per seed; a non-detection record is shared by every object of its quadrant image; an object's
30-day past is a function of its own seed, rebuilt when it recurs rather than kept, and a field's state is dropped
after its last visit (a 100k-alert night peaks near 300 MB). Encoding (alertdist.avro.codec) costs ~90% of the time.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

from alertdist import schemas
from alertdist.avro import codec
from alertdist.nights.dates import JD_UNIX_EPOCH, jd_of, unix_of_jd
from alertdist.simulate.cutouts import StampTriplet, make_triplet_pool, set_gzip_mtime

__all__ = [
    "DEFAULT_PROGRAMME_WEIGHTS",
    "DropCounts",
    "SimulatedAlert",
    "night_window",
    "simulate_night",
    "write_drop_folder",
]

DEFAULT_PROGRAMME_WEIGHTS: Mapping[int, float] = MappingProxyType({1: 0.5, 2: 0.4, 3: 0.1})
PALOMAR_LAT_DEG = 33.3563
PALOMAR_LON_DEG = -116.8650
TWILIGHT_ALT_DEG = -12.0  # ZTF observes between nautical twilights
NID_EPOCH_JD = 2457754.5  # 2017-01-01 UT: jd 2460229.93 has nid 2475 in the real packets
EXPOSURE_S = 30.0
CADENCE_S = 40.0  # 30 s exposure + readout + slew
HISTORY_DAYS = 30  # prv_candidates reach back this far
FP_DAYS = 20  # fp_hists reach back this far (the real 4.01 packets carry 9-21 entries)
QUADRANT_PIX = (3072, 3080)
PIXEL_DEG = 1.012 / 3600
PUBLISHER = "ZTF (www.ztf.caltech.edu)"
RB_VERSION = "t17_f5_c3"
DRB_VERSION = "d6_m7"
NEW_OBJECTS_PER_DAY = 56_700  # ZTF's name counter was at 'abjjn..' (~16.2 M) on 2023-10-12, day 285

_PROGRAMME_PI = {1: "Kulkarni", 2: "Kulkarni", 3: "Kasliwal"}  # public packets only ever show programme 1's
_BANDS = {1: "g", 2: "r", 3: "i"}
_ZEROPOINT = {1: 26.30, 2: 26.20, 3: 25.90}
_LIMIT = {1: 20.4, 2: 20.3, 3: 19.8}
_COLOUR_COEFF = {1: -0.06, 2: 0.10, 3: 0.03}
_SKY_DN = {1: 120.0, 2: 200.0, 3: 350.0}
# Share of new detections by astrophysical kind; "transient" alerts are made to pass typical science cuts.
_KINDS = ("variable", "nuclear", "transient", "asteroid", "bogus")
_KIND_WEIGHTS = (0.42, 0.06, 0.07, 0.04, 0.41)
_PERSISTENT = frozenset({"variable", "nuclear", "transient"})  # can be detected again tonight at the same place
_REDETECT_SHARE = 0.5  # of an exposure's alerts on a field already visited tonight, those of known objects
_MEASURE_POOL = 512


@dataclass(frozen=True, slots=True)
class SimulatedAlert:
    """One simulated alert: the encoded packet and the facts a test or a benchmark needs without decoding it.

    `exposure` is the exposure's index in the night; `kind` is the simulation's ground truth
    ('variable', 'nuclear', 'transient', 'asteroid' or 'bogus') for checking filters.
    """

    packet: bytes
    candid: int
    objectId: str
    programid: int
    jd: float
    pid: int
    exposure: int
    field: int
    rcid: int
    fid: int
    kind: str


@dataclass(frozen=True, slots=True)
class DropCounts:
    """What `write_drop_folder` wrote."""

    files: int
    bytes: int
    exposures: int
    seconds: float


# ------------------------------------------------------------------------------------------ time and sky


def _ut_of(jd: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=jd - JD_UNIX_EPOCH)


def _sun(jd: float) -> tuple[float, float]:
    """Solar declination (deg) and equation of time (days), low-precision almanac formulas (~1 arcmin)."""
    n = jd - 2451545.0
    mean_long = (280.460 + 0.9856474 * n) % 360.0
    anomaly = math.radians((357.528 + 0.9856003 * n) % 360.0)
    ecl_long = math.radians(mean_long + 1.915 * math.sin(anomaly) + 0.020 * math.sin(2 * anomaly))
    obliquity = math.radians(23.439 - 4e-7 * n)
    dec = math.degrees(math.asin(math.sin(obliquity) * math.sin(ecl_long)))
    ra = math.degrees(math.atan2(math.cos(obliquity) * math.sin(ecl_long), math.cos(ecl_long))) % 360.0
    return dec, ((mean_long - ra + 180.0) % 360.0 - 180.0) / 360.0


def _twilight(day_noon_ut_jd: float, *, evening: bool) -> float:
    dec, eot = _sun(day_noon_ut_jd)
    local_noon = day_noon_ut_jd - PALOMAR_LON_DEG / 360.0 - eot
    lat, d = math.radians(PALOMAR_LAT_DEG), math.radians(dec)
    cos_h = (math.sin(math.radians(TWILIGHT_ALT_DEG)) - math.sin(lat) * math.sin(d)) / (math.cos(lat) * math.cos(d))
    half_night = math.degrees(math.acos(max(-1.0, min(1.0, cos_h)))) / 360.0
    return local_noon + half_night if evening else local_noon - half_night


def night_window(night: date) -> tuple[float, float]:
    """JDs of evening and morning 12° twilight at Palomar for the night starting on local date `night`.

    E.g. 2023-10-12 -> (2460230.59, 2460231.04): 02:12 to 12:56 UT on the 13th. Note that ZTF
    names nights (topics, archive tarballs) by the UT date, which is `night` + 1 day.
    """
    noon = jd_of(datetime(night.year, night.month, night.day, 12, tzinfo=UTC))
    return _twilight(noon, evening=True), _twilight(noon + 1.0, evening=False)


def _lst_deg(jd: float) -> float:
    return (280.46061837 + 360.98564736629 * (jd - 2451545.0) + PALOMAR_LON_DEG) % 360.0


@lru_cache(maxsize=1)
def _field_grid() -> tuple[tuple[float, float], ...]:
    """Centres of a ZTF-like tiling of the sky in 7.0° dec bands; field number = index + 1 (not ZTF's own grid)."""
    centres = []
    dec = -86.5
    while dec < 90.0:
        n = max(1, math.ceil(360.0 * math.cos(math.radians(dec)) / 7.4))
        centres.extend(((i + 0.5) * 360.0 / n, dec) for i in range(n))
        dec += 7.0
    return tuple(centres)


def _sky_position(centre: tuple[float, float], rcid: int, x: float, y: float) -> tuple[float, float]:
    """RA/Dec of pixel (x, y) of readout quadrant `rcid`: 16 CCDs in 4x4, each 2x2 quadrants, ~7° across."""
    ccd, quad = divmod(rcid, 4)
    col = 2 * (ccd % 4) + quad % 2
    row = 2 * (ccd // 4) + quad // 2
    dec = centre[1] + (row - 4) * QUADRANT_PIX[1] * PIXEL_DEG + y * PIXEL_DEG
    ra = centre[0] + ((col - 4) * QUADRANT_PIX[0] * PIXEL_DEG + x * PIXEL_DEG) / math.cos(math.radians(dec))
    return round(ra % 360.0, 7), round(dec, 7)


def _offset(ra: float, dec: float, arcsec: float, rnd: random.Random) -> tuple[float, float]:
    angle = rnd.uniform(0.0, 2 * math.pi)
    d_dec = arcsec * math.sin(angle) / 3600.0
    d_ra = arcsec * math.cos(angle) / 3600.0 / max(0.05, math.cos(math.radians(dec)))
    return round((ra + d_ra) % 360.0, 7), round(dec + d_dec, 7)


def _pid(jd: float, rcid: int) -> int:
    nid = int(jd - NID_EPOCH_JD)
    return nid * 10**9 + int(((jd + 0.5) % 1.0) * 1e5) * 10**4 + rcid * 100 + 15


def _ps1_objid(ra: float, dec: float) -> int:
    """Pan-STARRS1 objID layout: zone (1/120°) · 10^13 + RA in µdeg · 10^4 + position within the zone."""
    zone = (dec + 90.0) * 120.0
    return int(zone) * 10**13 + int(ra * 1e6) * 10**4 + int((zone - int(zone)) * 1e4)


def _object_letters(counter: int) -> str:
    letters = []
    for _ in range(7):
        counter, digit = divmod(counter, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters))


# ------------------------------------------------------------------------------------------ night plan


@dataclass(frozen=True, slots=True)
class _Exposure:
    index: int
    jd: float
    field: int
    fid: int
    programid: int
    n_alerts: int
    last_visit: bool  # the field is not visited again tonight, so its state can be dropped


def _exposure_count(n_alerts: int, window: tuple[float, float]) -> int:
    """~200 alerts per exposure as in a real night, but at least ~√n/2 exposures so a small night has several."""
    most = max(1, int((window[1] - window[0]) * 86400.0 / (CADENCE_S * 1.15)))
    least = min(n_alerts, max(3, round(math.sqrt(n_alerts) / 2)))
    return max(1, min(most, max(least, round(n_alerts / 200))))


def _plan(
    n_alerts: int,
    window: tuple[float, float],
    weights: Mapping[int, float],
    rnd: random.Random,
    nrng: np.random.Generator,
) -> list[_Exposure]:
    """Exposures of the night: times, heavy-tailed alert counts, fields visited in 2-3 passes, programmes."""
    n_exp = _exposure_count(n_alerts, window)
    shares = nrng.lognormal(0.0, 1.0, n_exp)
    counts = (1 + nrng.multinomial(n_alerts - n_exp, shares / shares.sum())).tolist()

    jds, t = [], window[0] + rnd.uniform(0.0, 300.0) / 86400.0
    for _ in range(n_exp):
        jds.append(round(t, 7))
        gap = CADENCE_S - 7.0 + rnd.gammavariate(4.0, 1.75)
        if rnd.random() < 0.02:  # a filter change or a long slew
            gap += rnd.uniform(60.0, 150.0)
        t += gap / 86400.0

    # Fields in blocks, each block visited in 2 (sometimes 3) passes in different filters, as ZTF does.
    grid, used = _field_grid(), set()
    block_size = max(1, min(15, n_exp // 8))  # 15 fields: ~10 min between passes, bounded memory
    slots: list[tuple[int, int]] = []  # (field, fid) per exposure
    while len(slots) < n_exp:
        lst = _lst_deg(jds[len(slots)])
        visible = [
            i + 1
            for i, (ra, dec) in enumerate(grid)
            if -28.0 < dec < 80.0 and abs((ra - lst + 180.0) % 360.0 - 180.0) < 40.0
        ]
        fresh = [f for f in visible if f not in used] or visible
        fields = sorted(rnd.sample(fresh, min(block_size, len(fresh))))
        used.update(fields)
        first = rnd.choice((1, 2))
        fids = [first, 3 - first] + ([3 if rnd.random() < 0.3 else first] if rnd.random() < 0.2 else [])
        slots.extend((f, fid) for fid in fids for f in fields)
    slots = slots[:n_exp]
    last = {f: i for i, (f, _) in enumerate(slots)}

    programmes = _apportion(counts, weights)
    return [
        _Exposure(i, jds[i], slots[i][0], slots[i][1], programmes[i], counts[i], last[slots[i][0]] == i)
        for i in range(n_exp)
    ]


def _apportion(counts: list[int], weights: Mapping[int, float]) -> list[int]:
    """A programme per exposure such that each programme's share of *alerts* is close to its weight."""
    weights = {p: w for p, w in weights.items() if w > 0}
    total_weight = sum(weights.values())
    total = sum(counts)
    given = dict.fromkeys(weights, 0)
    out = [0] * len(counts)
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        programme = max(weights, key=lambda p: weights[p] / total_weight * total - given[p])
        out[i] = programme
        given[programme] += counts[i]
    return out


# ------------------------------------------------------------------------------------------ shapes


class _Shape:
    """The field names of one schema version; records are built for 4.02 and cut down for older versions."""

    def __init__(self, version: str):
        doc = schemas.load_schema(version)
        self.version = version
        self.top = tuple(f["name"] for f in doc["fields"])
        named = {}
        for f in doc["fields"]:
            for t in f["type"] if isinstance(f["type"], list) else [f["type"]]:
                if isinstance(t, dict):
                    named[f["name"]] = t["items"] if t.get("type") == "array" else t
        self.candidate = tuple(x["name"] for x in named["candidate"]["fields"])
        self.prv = tuple(x["name"] for x in named["prv_candidates"]["fields"])
        self.fp = tuple(x["name"] for x in named["fp_hists"]["fields"]) if "fp_hists" in named else None


class _Image:
    """One quadrant image (an epoch of a field, one rcid): the values every record made from it shares."""

    __slots__ = ("cand_base", "diffmaglim", "fid", "fp_base", "fp_noise", "jd", "nondet", "pid", "zp")


class _Object:
    __slots__ = (
        "amp",
        "dec",
        "jdstarthist",
        "kind",
        "mag",
        "ncovhist",
        "ndethist",
        "object_id",
        "onset",
        "past",
        "past_seed",
        "ra",
        "rcid",
        "ref_match",
        "static",
        "tonight_fp",
        "tonight_prv",
        "x",
        "y",
    )


class _FieldState:
    """A field visited tonight: its past epochs, the images made so far and the objects that may recur."""

    __slots__ = ("centre", "epoch_paths", "epochs", "images", "n_past", "number", "objects", "refs")

    def __init__(self, number: int, epochs: list[tuple[float, int, int]]):
        self.number = number
        self.centre = _field_grid()[number - 1]
        self.epochs = epochs  # (jd, fid, programid); the past ones first, tonight's appended as visited
        self.n_past = len(epochs)
        self.images: dict[tuple[int, int], _Image] = {}
        self.epoch_paths: dict[int, tuple[str, str]] = {}  # epoch -> its images' name stamp and archive folder
        self.refs: dict[tuple[int, int], dict] = {}
        self.objects: list[_Object] = []


# ------------------------------------------------------------------------------------------ the night


class _Night:
    """Everything one simulated night needs; `alerts()` yields it exposure by exposure."""

    def __init__(
        self,
        n_alerts: int,
        night: date,
        seed: int,
        weights: Mapping[int, float],
        templates: Path | None,
        schema_version: str,
    ):
        self.shape = _Shape(schema_version)
        self.full = _Shape(schemas.LATEST_VERSION)
        self.rnd = random.Random(f"ztf-night:{seed}:{night.isoformat()}")
        nrng = np.random.default_rng([seed, night.toordinal()])
        self.window = night_window(night)
        self.plan = _plan(n_alerts, self.window, weights, self.rnd, nrng)
        self.programme_pi = {p: _PROGRAMME_PI.get(p, "Kulkarni") for p in weights}
        self.programmes = sorted({e.programid for e in self.plan})
        self.cand_null = dict.fromkeys(self.full.candidate)
        self.prv_null = dict.fromkeys(self.full.prv)
        self.fields: dict[int, _FieldState] = {}
        self.used_ids: set[str] = set()
        start = _ut_of(self.window[0])
        self.next_counter = (start.timetuple().tm_yday - 1) * NEW_OBJECTS_PER_DAY + self.rnd.randrange(20_000)
        self.tonight_year = start.year % 100
        stamp_rng = np.random.default_rng([seed, night.toordinal(), 1])
        pool = make_triplet_pool(stamp_rng, max(16, min(256, n_alerts // 8)))
        self.measure_good = _measurement_pool(nrng, bogus=False)
        self.measure_bogus = _measurement_pool(nrng, bogus=True)
        if templates is not None:
            pool, self.measure_good = _from_templates(templates, pool, self.measure_good)
        self.psf_stamps = [t for t in pool if t.kind == "psf"] or pool
        self.psf_peaks = [t.peak for t in self.psf_stamps]
        self.odd_stamps = [t for t in pool if t.kind != "psf"] or pool

    # -------------------------------------------------------------- exposures

    def alerts(self) -> Iterator[SimulatedAlert]:
        for exposure in self.plan:
            fs = self.fields.get(exposure.field)
            if fs is None:
                fs = self.fields[exposure.field] = _FieldState(exposure.field, self._past_epochs())
            visit = len(fs.epochs) - fs.n_past
            fs.epochs.append((exposure.jd, exposure.fid, exposure.programid))
            yield from self._exposure_alerts(exposure, fs, visit)
            if exposure.last_visit:
                del self.fields[exposure.field]

    def _past_epochs(self) -> list[tuple[float, int, int]]:
        """Visits of a field over the last 30 nights: ~55% of nights, 1-3 visits each, mostly g and r."""
        rnd = self.rnd
        length = self.window[1] - self.window[0]
        programmes = self.programmes
        epochs = []
        for days_ago in range(HISTORY_DAYS, 0, -1):
            if rnd.random() < 0.55:
                for _ in range(rnd.choice((1, 2, 2, 3))):
                    fid = 3 if rnd.random() < 0.05 else rnd.choice((1, 2))
                    jd = round(self.window[0] - days_ago + rnd.uniform(0.0, length), 7)
                    epochs.append((jd, fid, rnd.choice(programmes)))
        epochs.sort()
        return epochs

    def _exposure_alerts(self, exposure: _Exposure, fs: _FieldState, visit: int) -> Iterator[SimulatedAlert]:
        rnd = self.rnd
        k = exposure.n_alerts
        known = fs.objects if visit > 0 else []
        n_again = min(len(known), sum(rnd.random() < _REDETECT_SHARE for _ in range(k))) if known else 0
        objects = rnd.sample(known, n_again) if n_again else []
        kinds = rnd.choices(_KINDS, _KIND_WEIGHTS, k=k - n_again)
        for kind in kinds:
            obj = self._new_object(fs, kind, exposure.jd)
            objects.append(obj)
            if kind in _PERSISTENT:
                fs.objects.append(obj)
        objects.sort(key=lambda o: o.rcid)
        tblids: dict[int, int] = {}
        for obj in objects:
            tblid = tblids.get(obj.rcid, 0)
            tblids[obj.rcid] = tblid + 1
            if tblid >= 1000:  # candid keeps 3 digits for it
                raise ValueError(f"cannot simulate exposure {exposure.index}: over 1000 alerts in quadrant {obj.rcid}")
            yield self._alert(exposure, fs, visit, obj, tblid)

    # -------------------------------------------------------------- images

    def _image(self, fs: _FieldState, key: int, rcid: int) -> _Image:
        image = fs.images.get((key, rcid))
        if image is None:
            image = fs.images[(key, rcid)] = self._make_image(fs, key, rcid)
        return image

    def _make_image(self, fs: _FieldState, key: int, rcid: int) -> _Image:
        rnd = self.rnd
        jd, fid, programid = fs.epochs[key]
        image = _Image()
        image.jd, image.fid, image.pid = jd, fid, _pid(jd, rcid)
        image.diffmaglim = _LIMIT[fid] + rnd.gauss(0.0, 0.35)
        image.zp = _ZEROPOINT[fid] + rnd.gauss(0.0, 0.05)
        image.fp_noise = 10 ** (0.4 * (image.zp - image.diffmaglim)) / 5.0  # forced photometry's 1-sigma flux
        stamp, folder = fs.epoch_paths.get(key) or self._make_epoch_paths(fs, key)
        name = f"ztf_{stamp}_{fs.number:06d}_z{_BANDS[fid]}_c{rcid // 4 + 1:02d}_o_q{rcid % 4 + 1}_scimrefdiffimg.fits"
        common = {
            "jd": jd,
            "fid": fid,
            "pid": image.pid,
            "diffmaglim": image.diffmaglim,
            "programpi": self.programme_pi.get(programid, "Kulkarni"),
            "programid": programid,
            "nid": int(jd - NID_EPOCH_JD),
            "rcid": rcid,
            "field": fs.number,
            "magzpsci": image.zp,
            "magzpsciunc": rnd.uniform(8e-6, 8e-5),
            "magzpscirms": rnd.uniform(0.02, 0.05),
            "clrcoeff": _COLOUR_COEFF[fid] + rnd.gauss(0.0, 0.015),
            "clrcounc": rnd.uniform(1e-5, 8.5e-5),
        }
        archive = f"{folder}/{name}.fz"
        image.nondet = {**self.prv_null, **common, "pdiffimfilename": archive, "rbversion": RB_VERSION}
        ref = self._reference(fs, fid, rcid)
        image.fp_base = {
            "field": fs.number,
            "rcid": rcid,
            "fid": fid,
            "pid": image.pid,
            "rfid": ref["rfid"],
            "sciinpseeing": rnd.uniform(1.5, 3.5),
            "scibckgnd": _SKY_DN[fid] * rnd.uniform(0.6, 2.0),
            "scisigpix": rnd.uniform(4.0, 12.0),
            "magzpsci": image.zp,
            "magzpsciunc": common["magzpsciunc"],
            "magzpscirms": common["magzpscirms"],
            "clrcoeff": common["clrcoeff"],
            "clrcounc": common["clrcounc"],
            "exptime": EXPOSURE_S,
            "adpctdif1": rnd.uniform(0.05, 0.15),
            "adpctdif2": rnd.uniform(0.05, 0.15),
            "diffmaglim": image.diffmaglim,
            "programid": programid,
            "jd": jd,
        }
        image.cand_base = None
        if key >= fs.n_past:  # tonight: a candidate can come from it
            image.cand_base = {
                **self.cand_null,
                **common,
                **ref,
                "pdiffimfilename": name,
                "exptime": EXPOSURE_S,
                "zpclrcov": -rnd.uniform(5e-6, 8e-5),
                "zpmed": image.zp + rnd.gauss(-0.04, 0.02),
                "clrmed": rnd.uniform(0.5, 1.2),
                "clrrms": rnd.uniform(0.2, 0.35),
                "nmatches": rnd.randint(200, 1600),
                "rbversion": RB_VERSION,
                "drbversion": DRB_VERSION,
                "tooflag": 0,
            }
        return image

    @staticmethod
    def _make_epoch_paths(fs: _FieldState, key: int) -> tuple[str, str]:
        """The epoch's image name stamp (when it was requested) and its archive folder: the same for all 64 rcids."""
        jd = fs.epochs[key][0]
        requested = _ut_of(jd - 11.0 / 86400.0)
        stamp = f"{requested:%Y%m%d}{int(((jd - 11.0 / 86400.0 + 0.5) % 1.0) * 1e6):06d}"
        paths = fs.epoch_paths[key] = (stamp, f"/ztf/archive/sci/{requested:%Y/%m%d}/{stamp[8:]}")
        return paths

    def _reference(self, fs: _FieldState, fid: int, rcid: int) -> dict:
        ref = fs.refs.get((fid, rcid))
        if ref is None:
            rnd = self.rnd
            start = 2458150.0 + rnd.uniform(0.0, 250.0)
            ref = fs.refs[(fid, rcid)] = {
                "rfid": fs.number * 10**6 + 120_000 + fid * 100 + rcid,
                "jdstartref": round(start, 6),
                "jdendref": round(start + rnd.uniform(5.0, 70.0), 6),
                "nframesref": rnd.randint(15, 30),
            }
        return ref

    # -------------------------------------------------------------- objects

    def _new_id(self, first_jd: float | None) -> str:
        """A fresh objectId: tonight's counter for objects first seen now, else one from the first detection's date."""
        while True:
            if first_jd is None:
                year, counter = self.tonight_year, self.next_counter
                self.next_counter += 1
            else:
                first = _ut_of(first_jd)
                year = first.year % 100
                counter = (first.timetuple().tm_yday - 1) * NEW_OBJECTS_PER_DAY + self.rnd.randrange(
                    NEW_OBJECTS_PER_DAY
                )
            object_id = f"ZTF{year:02d}{_object_letters(counter)}"
            if object_id not in self.used_ids:
                self.used_ids.add(object_id)
                return object_id

    def _new_object(self, fs: _FieldState, kind: str, jd: float) -> _Object:
        rnd = self.rnd
        obj = _Object()
        obj.kind = kind
        obj.rcid = rnd.randrange(64)
        obj.x, obj.y = rnd.uniform(10.0, QUADRANT_PIX[0] - 10.0), rnd.uniform(10.0, QUADRANT_PIX[1] - 10.0)
        obj.ra, obj.dec = _sky_position(fs.centre, obj.rcid, obj.x, obj.y)
        obj.tonight_prv, obj.tonight_fp = {}, {}
        onset = None  # jd of the first detection before tonight, if any
        if kind == "variable":
            obj.mag, obj.amp = rnd.uniform(16.0, 19.5), 0.3
            magnr, distnr, star = obj.mag - rnd.uniform(0.5, 3.0), rnd.uniform(0.03, 1.0), rnd.uniform(0.85, 1.0)
            onset = rnd.uniform(2458050.0, jd - 60.0)
        elif kind == "nuclear":
            obj.mag, obj.amp = rnd.uniform(17.5, 19.8), 0.2
            magnr, distnr, star = rnd.uniform(17.0, 20.5), rnd.uniform(0.05, 0.8), rnd.uniform(0.0, 0.3)
            onset = rnd.uniform(2458050.0, jd - 60.0)
        elif kind == "transient":
            obj.mag, obj.amp = rnd.uniform(16.5, 19.5), 0.1
            if rnd.random() < 0.7:  # in a host galaxy
                magnr, distnr, star = rnd.uniform(18.5, 21.5), rnd.uniform(0.5, 3.0), rnd.uniform(0.0, 0.45)
            else:
                magnr, distnr, star = rnd.uniform(21.0, 23.3), rnd.uniform(5.0, 20.0), rnd.uniform(0.0, 1.0)
            age = rnd.uniform(-2.0, 12.0)
            onset = jd - age if age > 0.5 else None
        elif kind == "asteroid":
            obj.mag, obj.amp = rnd.uniform(17.0, 20.2), 0.05
            magnr, distnr, star = rnd.uniform(21.5, 23.3), rnd.uniform(3.0, 22.0), rnd.uniform(0.0, 1.0)
        else:  # bogus: subtraction artefacts, mostly around bright stars
            obj.mag, obj.amp = rnd.uniform(15.5, 20.0), 0.3
            magnr, distnr, star = rnd.uniform(12.5, 16.5), rnd.uniform(0.2, 5.0), rnd.uniform(0.9, 1.0)
        obj.object_id = self._new_id(onset)
        obj.jdstarthist = round(onset, 7) if onset is not None else jd
        ranr, decnr = _offset(obj.ra, obj.dec, distnr, rnd)
        obj.ref_match = {
            "distnr": distnr,
            "magnr": round(magnr, 3),
            "sigmagnr": rnd.uniform(0.01, 0.05 + max(0.0, magnr - 19) * 0.1),
            "chinr": rnd.lognormvariate(0.0, 0.6),
            "sharpnr": rnd.gauss(0.0, 0.08 if star > 0.5 else 0.3),
            "ranr": ranr,
            "decnr": decnr,
        }
        obj.static = {**obj.ref_match, **self._neighbours(obj, kind, distnr, magnr, star)}
        if kind == "asteroid":
            ss = {
                "ssdistnr": float(round(rnd.uniform(0.0, 3.0))),
                "ssnamenr": str(int(math.exp(rnd.uniform(6.0, 13.3)))),
            }
        else:
            ss = {"ssdistnr": -999.0, "ssmagnr": -999.0, "ssnamenr": "null"}
        obj.static.update(ss)
        obj.ndethist = (
            int(min(1500, rnd.lognormvariate(4.3, 1.0))) + 5 if onset is not None and kind != "transient" else 0
        )
        obj.ncovhist = 0
        obj.onset, obj.past_seed = onset, self.rnd.getrandbits(64)
        obj.past = self._past(fs, obj)
        obj.ndethist += sum(p["candid"] is not None for p in obj.past[0])
        if onset is not None and kind == "transient" and obj.ndethist == 0:
            obj.jdstarthist = None  # not seen after all: its first detection is tonight's
        obj.ncovhist = max(obj.ndethist + 1, int(rnd.uniform(150, 2400)))
        return obj

    def _neighbours(self, obj: _Object, kind: str, distnr: float, magnr: float, star: float) -> dict:
        """Pan-STARRS1 (3 nearest) and Gaia counterparts; -999 where ZTF's cross-match found none."""
        rnd = self.rnd
        out: dict[str, object] = {}
        dist = distnr * rnd.uniform(0.8, 1.2) if kind != "asteroid" or rnd.random() < 0.5 else -999.0
        for n in (1, 2, 3):
            if n > 1:
                dist = rnd.uniform(max(2.0, dist if dist > 0 else 2.0), 30.0)
            if dist < 0 or (n > 1 and rnd.random() < 0.1):
                out.update(
                    {
                        f"objectidps{n}": -999,
                        f"sgmag{n}": -999.0,
                        f"srmag{n}": -999.0,
                        f"simag{n}": -999.0,
                        f"szmag{n}": -999.0,
                        f"sgscore{n}": -999.0,
                        f"distpsnr{n}": -999.0,
                    }
                )
                continue
            base = magnr if n == 1 else rnd.uniform(17.0, 22.3)
            pra, pdec = _offset(obj.ra, obj.dec, dist, rnd)
            out[f"objectidps{n}"] = _ps1_objid(pra, pdec)
            for band, colour in (("g", 0.6), ("r", 0.0), ("i", -0.2), ("z", -0.3)):
                mag = base + colour + rnd.gauss(0.0, 0.1)
                out[f"s{band}mag{n}"] = mag if mag < 22.5 else -999.0
            out[f"sgscore{n}"] = star if n == 1 else rnd.uniform(0.0, 1.0)
            out[f"distpsnr{n}"] = dist
        out["nmtchps"] = rnd.randint(0, 40)
        if out["distpsnr1"] > 0 and out["sgscore1"] > 0.5 and magnr < 20.5:
            out["neargaia"], out["maggaia"] = abs(out["distpsnr1"] + rnd.gauss(0.0, 0.05)), magnr + rnd.gauss(0.1, 0.2)
        elif rnd.random() < 0.7:
            out["neargaia"], out["maggaia"] = rnd.uniform(8.0, 65.0), rnd.uniform(16.0, 20.8)
        else:
            out["neargaia"], out["maggaia"] = -999.0, -999.0
        if rnd.random() < 0.3:
            out["neargaiabright"], out["maggaiabright"] = rnd.uniform(20.0, 90.0), rnd.uniform(9.0, 14.0)
        else:
            out["neargaiabright"], out["maggaiabright"] = -999.0, -999.0
        return out

    def _past(self, fs: _FieldState, obj: _Object) -> tuple[list[dict], list[dict]]:
        """The object's prv_candidates (oldest first) and fp_hists (newest first) from the field's past epochs.

        A pure function of the object's own seed and the field's images: an object seen again tonight gets its
        past rebuilt rather than kept, which holds a big night's memory to what one block of fields needs.
        """
        rnd = random.Random(obj.past_seed)
        onset = obj.onset
        p_detect = {"variable": 0.55, "nuclear": 0.35, "transient": 0.85}.get(obj.kind, 0.0)
        fp_from = self.window[0] - FP_DAYS
        p_positive = {"variable": 0.6, "nuclear": 0.7}.get(obj.kind, 1.0)
        prv, fp = [], []
        shape = None  # measured once; past detections then differ only in photometry, to keep this cheap
        for key in range(fs.n_past):
            image = self._image(fs, key, obj.rcid)
            m = None
            if onset is not None and image.jd >= onset and rnd.random() < p_detect:
                if shape is None:
                    shape = {**obj.ref_match, **self._measure(obj, image, rnd)[0]}
                limit = image.diffmaglim
                mag = min(obj.mag + rnd.gauss(0.0, obj.amp), limit + 0.1)
                sigma = max(0.02, 1.0857 / (5.0 * 10 ** (0.24 * (limit - mag))))
                sign = "t" if rnd.random() < p_positive else "f"
                tblid = rnd.randrange(300)
                m = {
                    **image.nondet,
                    **shape,
                    "magpsf": mag,
                    "sigmapsf": sigma,
                    "magap": mag + shape["magdiff"],
                    "magapbig": mag + shape["magdiff"] + 0.02,
                    "magfromlim": limit - mag - shape["magdiff"],
                    "isdiffpos": sign,
                    "tblid": tblid,
                    "candid": image.pid * 10**6 + (15 if sign == "t" else 10) * 1000 + tblid,
                }
                prv.append(m)
            else:
                prv.append(image.nondet)
            if image.jd >= fp_from:
                fp.append(self._forced(obj, image, m, rnd))
        return prv, fp[::-1]

    def _forced(self, obj: _Object, image: _Image, measured: dict | None, rnd: random.Random) -> dict:
        if rnd.random() < 0.2:  # ZTF's forced photometry failed on this image
            flux, unc, status = -99999.0, -99999.0, "61"
        else:
            unc = image.fp_noise
            flux = rnd.gauss(0.0, unc)
            if measured is not None:
                sign = 1.0 if measured["isdiffpos"] == "t" else -1.0
                flux += sign * 10 ** (0.4 * (image.zp - measured["magpsf"]))
            status = "0"
        return {
            **image.fp_base,
            **obj.ref_match,
            "forcediffimflux": flux,
            "forcediffimfluxunc": unc,
            "procstatus": status,
        }

    # -------------------------------------------------------------- detections

    def _measure(self, obj: _Object, image: _Image, rnd: random.Random) -> tuple[dict, dict, float]:
        """Per-detection values shared by candidates and prv_candidates, the candidate-only extras, and drb."""
        kind = obj.kind
        limit = image.diffmaglim
        mag = min(obj.mag + rnd.gauss(0.0, obj.amp), limit + 0.1)
        snr = 5.0 * 10 ** (0.24 * (limit - mag))  # fitted to the real packets' sigmapsf
        sigma = max(0.02, 1.0857 / snr * rnd.uniform(0.85, 1.15))
        magap = mag + rnd.gauss(0.0, 0.06 + sigma / 2)
        sigmagap = sigma * rnd.uniform(0.5, 1.2)
        x = min(max(obj.x + rnd.gauss(0.0, 0.3), 1.0), QUADRANT_PIX[0] - 1.0)
        y = min(max(obj.y + rnd.gauss(0.0, 0.3), 1.0), QUADRANT_PIX[1] - 1.0)
        ra, dec = _offset(obj.ra, obj.dec, abs(rnd.gauss(0.0, 0.1)), rnd)
        if kind == "bogus":
            rb, drb, positive = rnd.uniform(0.15, 0.6), rnd.uniform(0.0, 0.45), rnd.random() < 0.5
            shape, extra = rnd.choice(self.measure_bogus)
        else:
            if kind == "transient":
                rb, drb, positive = rnd.uniform(0.66, 0.98), 1.0 - 10 ** rnd.uniform(-6.0, -1.1), True
            elif kind == "asteroid":
                rb, drb, positive = rnd.uniform(0.4, 0.85), 1.0 - 10 ** rnd.uniform(-6.0, -1.3), True
            else:
                rb = min(0.99, max(0.3, rnd.gauss(0.7, 0.12)))
                drb = 1.0 - 10 ** rnd.uniform(-6.0, -0.2) if rnd.random() < 0.9 else rnd.uniform(0.1, 0.8)
                positive = rnd.random() < (0.6 if kind == "variable" else 0.7)
            shape, extra = rnd.choice(self.measure_good)
        m = {
            **shape,
            "magpsf": mag,
            "sigmapsf": sigma,
            "magap": magap,
            "sigmagap": sigmagap,
            "magapbig": magap + rnd.gauss(0.02, 0.05),
            "sigmagapbig": sigmagap * rnd.uniform(1.1, 1.4),
            "magdiff": magap - mag,
            "magfromlim": limit - magap,
            "xpos": x,
            "ypos": y,
            "ra": ra,
            "dec": dec,
            "mindtoedge": min(x, y, QUADRANT_PIX[0] - x, QUADRANT_PIX[1] - y),
            "isdiffpos": "t" if positive else "f",
            "rb": round(rb * 700) / 700,
            "scorr": min(80.0, max(5.0, snr * rnd.uniform(0.6, 1.1))),
        }
        return m, extra, drb

    def _alert(self, exposure: _Exposure, fs: _FieldState, visit: int, obj: _Object, tblid: int) -> SimulatedAlert:
        rnd = self.rnd
        image = self._image(fs, fs.n_past + visit, obj.rcid)
        m, extra, drb = self._measure(obj, image, rnd)
        candid = image.pid * 10**6 + (15 if m["isdiffpos"] == "t" else 10) * 1000 + tblid
        obj.ndethist += 1
        if obj.jdstarthist is None:
            obj.jdstarthist = exposure.jd
        candidate = {
            **image.cand_base,
            **obj.static,
            **m,
            **extra,
            "candid": candid,
            "tblid": tblid,
            "drb": drb,
            "ndethist": obj.ndethist,
            "ncovhist": obj.ncovhist + visit,
            "jdstarthist": obj.jdstarthist,
            "jdendhist": exposure.jd,
        }
        if obj.kind == "asteroid":
            candidate["ssmagnr"] = round(m["magpsf"] + rnd.gauss(0.0, 0.3), 1)
        past_prv, past_fp = obj.past or self._past(fs, obj)
        obj.past = None
        prv = past_prv + [
            obj.tonight_prv.get(i) or self._image(fs, fs.n_past + i, obj.rcid).nondet for i in range(visit)
        ]
        fp = [self._tonight_forced(fs, obj, i) for i in range(visit - 1, -1, -1)] + past_fp
        if obj.kind in _PERSISTENT:
            obj.tonight_prv[visit] = {**image.nondet, **obj.ref_match, **m, "candid": candid, "tblid": tblid}
            obj.tonight_fp[visit] = self._forced(obj, image, m, rnd)
        record = {
            "schemavsn": self.shape.version,
            "publisher": PUBLISHER,
            "objectId": obj.object_id,
            "candid": candid,
            "candidate": candidate,
            "prv_candidates": prv,
            "fp_hists": fp,
            **self._cutouts(candid, image, m, obj.kind),
        }
        return SimulatedAlert(
            packet=codec.encode(self._fit(record), self.shape.version, check=False),
            candid=candid,
            objectId=obj.object_id,
            programid=candidate["programid"],
            jd=exposure.jd,
            pid=image.pid,
            exposure=exposure.index,
            field=fs.number,
            rcid=obj.rcid,
            fid=exposure.fid,
            kind=obj.kind,
        )

    def _tonight_forced(self, fs: _FieldState, obj: _Object, visit: int) -> dict:
        entry = obj.tonight_fp.get(visit)
        if entry is None:
            image = self._image(fs, fs.n_past + visit, obj.rcid)
            entry = obj.tonight_fp[visit] = self._forced(obj, image, None, self.rnd)
        return entry

    def _cutouts(self, candid: int, image: _Image, m: dict, kind: str) -> dict:
        rnd = self.rnd
        if kind == "bogus" and rnd.random() < 0.6:
            triplet: StampTriplet = rnd.choice(self.odd_stamps)
        else:  # the pooled PSF whose peak best matches this magnitude (FWHM ~2.5 px)
            peak = 10 ** (0.4 * (image.zp - m["magpsf"])) / 10.0
            i = bisect.bisect_left(self.psf_peaks, peak) + rnd.randint(-2, 2)
            triplet = self.psf_stamps[min(max(i, 0), len(self.psf_stamps) - 1)]
        mtime = int(unix_of_jd(image.jd)) + rnd.randint(240, 600)  # processed minutes later
        diff = "scimref" if m["isdiffpos"] == "t" else "refmsci"
        return {
            "cutoutScience": {
                "fileName": f"candid{candid}_pid{image.pid}_targ_sci.fits.gz",
                "stampData": set_gzip_mtime(triplet.science, mtime),
            },
            "cutoutTemplate": {
                "fileName": f"candid{candid}_ref.fits.gz",
                "stampData": set_gzip_mtime(triplet.template, mtime),
            },
            "cutoutDifference": {
                "fileName": f"candid{candid}_pid{image.pid}_targ_{diff}.fits.gz",
                "stampData": set_gzip_mtime(triplet.difference, mtime),
            },
        }

    def _fit(self, record: dict) -> dict:
        """The record cut down to the requested schema version (4.02 is the superset of all)."""
        shape = self.shape
        if shape.candidate == self.full.candidate and shape.prv == self.full.prv and shape.fp == self.full.fp:
            return record
        out = {k: record[k] for k in shape.top}
        out["candidate"] = {k: record["candidate"][k] for k in shape.candidate}
        out["prv_candidates"] = [{k: p[k] for k in shape.prv} for p in record["prv_candidates"]]
        if shape.fp is not None:
            out["fp_hists"] = [{k: p[k] for k in shape.fp} for p in record["fp_hists"]]
        return out


def _measurement_pool(nrng: np.random.Generator, *, bogus: bool) -> list[tuple[dict, dict]]:
    """Shape measurements (PSF fit, moments, classifier inputs) for detections, drawn once per night.

    Each entry: (fields that prv_candidates also carry, candidate-only fields).
    """
    n = _MEASURE_POOL
    if bogus:
        fwhm = np.clip(nrng.lognormal(np.log(3.5), 0.45, n), 1.2, 10.0)
        elong = np.clip(1.0 + np.abs(nrng.normal(0.0, 0.2, n)), 1.0, 1.45)
        classtar = nrng.uniform(0.0, 1.0, n)
        chipsf = np.clip(nrng.lognormal(np.log(8.0), 1.2, n), 0.5, 400.0)
        nneg = nrng.integers(0, 11, n)
        nbad = nrng.integers(0, 4, n)
        sumrat = np.clip(1.0 - np.abs(nrng.normal(0.0, 0.04, n)), 0.91, 1.0)
    else:
        fwhm = np.clip(nrng.normal(3.8, 1.0, n), 1.8, 8.0)
        elong = 1.0 + np.abs(nrng.normal(0.0, 0.08, n))
        classtar = np.clip(1.0 - np.abs(nrng.normal(0.0, 0.12, n)), 0.3, 1.0)
        chipsf = np.clip(nrng.lognormal(np.log(2.0), 0.8, n), 0.3, 350.0)
        nneg = nrng.poisson(0.5, n)
        nbad = np.where(nrng.random(n) < 0.95, 0, 1)
        sumrat = np.clip(1.0 - np.abs(nrng.normal(0.0, 0.02, n)), 0.8, 1.0)
    aimage = fwhm * nrng.uniform(0.22, 0.4, n)
    bimage = aimage / elong
    dsnrms = nrng.lognormal(np.log(11.0), 1.0, n)
    ssnrms = dsnrms * nrng.uniform(1.5, 6.0, n)
    columns = {
        "chipsf": chipsf,
        "sky": np.clip(nrng.normal(-0.2, 0.8, n), -5.0, 3.0),
        "fwhm": fwhm,
        "classtar": classtar,
        "aimage": aimage,
        "bimage": bimage,
        "aimagerat": aimage / fwhm,
        "bimagerat": bimage / fwhm,
        "elong": elong,
        "nneg": nneg,
        "nbad": nbad,
        "sumrat": sumrat,
        "seeratio": np.clip(nrng.lognormal(0.0, 0.3, n), 0.5, 2.0),
    }
    shared = [dict(zip(columns, row)) for row in zip(*(c.tolist() for c in columns.values()))]
    extra = [{"dsnrms": d, "ssnrms": s, "dsdiff": d - s} for d, s in zip(dsnrms.tolist(), ssnrms.tolist())]
    return list(zip(shared, extra))


def _from_templates(
    folder: Path, pool: list[StampTriplet], measure: list[tuple[dict, dict]]
) -> tuple[list[StampTriplet], list[tuple[dict, dict]]]:
    """Real packets as templates: their stamps join the pool, their shape measurements replace the simulated ones.

    Identity, time, position, photometry and history stay simulated, so a night stays self-consistent.
    """
    paths = sorted(Path(folder).glob("*.avro"))
    if not paths:
        raise FileNotFoundError(f"no *.avro packets in the templates folder {folder}")
    shared_keys = tuple(measure[0][0])
    extra_keys = tuple(measure[0][1])
    real_pool, real_measure = [], []
    for path in paths:
        try:
            record = codec.decode(path.read_bytes())
        except (OSError, codec.AlertPacketError) as e:
            raise ValueError(f"cannot use {path} as a template packet: {e}") from e
        c = record["candidate"]
        if all(c.get(k) is not None for k in shared_keys):
            real_measure.append(({k: c[k] for k in shared_keys}, {k: c.get(k) for k in extra_keys}))
        if all(record.get(k) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")):
            # Real difference peaks are unknown without decoding; spread them over the pool's range by magnitude.
            peak = 10 ** (0.4 * (c.get("magzpsci") or 26.2) - 0.4 * c["magpsf"]) / 10.0
            real_pool.append(
                StampTriplet(
                    record["cutoutScience"]["stampData"],
                    record["cutoutTemplate"]["stampData"],
                    record["cutoutDifference"]["stampData"],
                    peak,
                    "psf",
                )
            )
    return sorted(real_pool, key=lambda t: t.peak) or pool, real_measure or measure


# ------------------------------------------------------------------------------------------ public API


def simulate_night(
    n_alerts: int,
    *,
    night: date,
    seed: int = 0,
    programme_weights: Mapping[int, float] = DEFAULT_PROGRAMME_WEIGHTS,
    templates: Path | None = None,
    schema_version: str = schemas.LATEST_VERSION,
) -> Iterator[SimulatedAlert]:
    """The alerts of one simulated ZTF night, in the order ZTF would send them.

    Parameters
    ----------
    n_alerts : int
        How many alerts in all (a real night has 1e5-1e6). Exposures get ~200 each on average, heavy-tailed,
        but a small night is still spread over at least ~√n/2 exposures.
    night : datetime.date
        Local date at Palomar when the night starts; the first exposure is just after evening twilight.
    seed : int
        Same arguments, same bytes; another seed, another night.
    programme_weights : mapping of programid to weight
        Target share of alerts per programme (each exposure belongs to one programme).
    templates : Path, optional
        A folder of real packets (*.avro) whose stamps and shape measurements are reused.
    schema_version : str
        Schema the packets are written in (4.02 by default; older versions get their subset of fields).

    Yields
    ------
    SimulatedAlert
        Packets encoded by `alertdist.avro.codec.encode`, with their routing facts.
    """
    if n_alerts < 0:
        raise ValueError(f"cannot simulate a night of {n_alerts} alerts")
    weights = dict(programme_weights)
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"programme weights must be non-negative and not all zero, got {weights}")
    if schema_version not in schemas.available_versions():
        raise ValueError(f"cannot simulate schema {schema_version!r}; known: {', '.join(schemas.available_versions())}")
    if n_alerts == 0:
        return iter(())
    return _Night(n_alerts, night, seed, weights, templates, schema_version).alerts()


def write_drop_folder(
    alerts: Iterable[SimulatedAlert],
    folder: Path,
    *,
    speed: float | None = None,
    progress: Callable[[int, SimulatedAlert], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DropCounts:
    """Write each packet as `<candid>.avro` in `folder`, exposure by exposure, at the night's cadence.

    A file appears under its final name only once complete (written as `.<candid>.avro.tmp`, then renamed), so a
    watcher that ignores dot-files never sees a partial packet. With `speed` (e.g. 60 = a minute of night per
    second) exposures are spaced by their jd difference / speed; None writes as fast as possible.
    `progress(files_written, alert)` is called after each file.
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive or None, got {speed}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = clock()
    files = size = exposures = 0
    first_jd = last_exposure = None
    for alert in alerts:
        if alert.exposure != last_exposure:
            exposures += 1
            last_exposure = alert.exposure
            if first_jd is None:
                first_jd = alert.jd
            elif speed is not None:
                wait = started + (alert.jd - first_jd) * 86400.0 / speed - clock()
                if wait > 0:
                    sleep(wait)
        final = folder / f"{alert.candid}.avro"
        partial = folder / f".{alert.candid}.avro.tmp"
        try:
            partial.write_bytes(alert.packet)
            os.replace(partial, final)
        except OSError as e:
            raise OSError(f"cannot write alert {alert.candid} to {final}: {e}") from e
        files += 1
        size += len(alert.packet)
        if progress is not None:
            progress(files, alert)
    return DropCounts(files=files, bytes=size, exposures=exposures, seconds=clock() - started)
