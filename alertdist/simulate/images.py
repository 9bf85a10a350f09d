"""Quadrant images: the fields visited tonight, their past epochs, and the values every record made from one
image shares (limits, zero points, file names, references).

A non-detection record is the same for every object of its quadrant image, so it is built once here and shared.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from alertdist.simulate import ids
from alertdist.simulate.plan import EXPOSURE_S
from alertdist.simulate.sky import field_grid, ut_of

if TYPE_CHECKING:
    from alertdist.simulate.objects import SimObject

__all__ = ["FieldState", "Image", "ImageMaker", "past_epochs"]

HISTORY_DAYS = 30  # prv_candidates reach back this far
RB_VERSION = "t17_f5_c3"
DRB_VERSION = "d6_m7"
_PROGRAMME_PI = {1: "Kulkarni", 2: "Kulkarni", 3: "Kasliwal"}  # public packets only ever show programme 1's
_BANDS = {1: "g", 2: "r", 3: "i"}
_ZEROPOINT = {1: 26.30, 2: 26.20, 3: 25.90}
_LIMIT = {1: 20.4, 2: 20.3, 3: 19.8}
_COLOUR_COEFF = {1: -0.06, 2: 0.10, 3: 0.03}
_SKY_DN = {1: 120.0, 2: 200.0, 3: 350.0}


class Image:
    """One quadrant image (an epoch of a field, one rcid): the values every record made from it shares."""

    __slots__ = ("cand_base", "diffmaglim", "fid", "fp_base", "fp_noise", "jd", "nondet", "pid", "zp")


class FieldState:
    """A field visited tonight: its past epochs, the images made so far and the objects that may recur."""

    __slots__ = ("centre", "epoch_paths", "epochs", "images", "n_past", "number", "objects", "refs")

    def __init__(self, number: int, epochs: list[tuple[float, int, int]]):
        self.number = number
        self.centre = field_grid()[number - 1]
        self.epochs = epochs  # (jd, fid, programid); the past ones first, tonight's appended as visited
        self.n_past = len(epochs)
        self.images: dict[tuple[int, int], Image] = {}
        self.epoch_paths: dict[int, tuple[str, str]] = {}  # epoch -> its images' name stamp and archive folder
        self.refs: dict[tuple[int, int], dict] = {}
        self.objects: list[SimObject] = []  # those that may be detected again tonight


def past_epochs(rnd: random.Random, window: tuple[float, float], programmes: list[int]) -> list[tuple[float, int, int]]:
    """Visits of a field over the last 30 nights: ~55% of nights, 1-3 visits each, mostly g and r."""
    length = window[1] - window[0]
    epochs = []
    for days_ago in range(HISTORY_DAYS, 0, -1):
        if rnd.random() < 0.55:
            for _ in range(rnd.choice((1, 2, 2, 3))):
                fid = 3 if rnd.random() < 0.05 else rnd.choice((1, 2))
                jd = round(window[0] - days_ago + rnd.uniform(0.0, length), 7)
                epochs.append((jd, fid, rnd.choice(programmes)))
    epochs.sort()
    return epochs


class ImageMaker:
    """Makes each quadrant image once, on first use, drawing from the night's random stream."""

    def __init__(self, rnd: random.Random, programmes: Iterable[int], cand_null: dict, prv_null: dict):
        self.rnd = rnd
        self.programme_pi = {p: _PROGRAMME_PI.get(p, "Kulkarni") for p in programmes}
        self.cand_null = cand_null
        self.prv_null = prv_null

    def image(self, fs: FieldState, key: int, rcid: int) -> Image:
        """Quadrant `rcid` of epoch `key` of the field (the past epochs first, then tonight's visits)."""
        image = fs.images.get((key, rcid))
        if image is None:
            image = fs.images[(key, rcid)] = self._make_image(fs, key, rcid)
        return image

    def _make_image(self, fs: FieldState, key: int, rcid: int) -> Image:
        rnd = self.rnd
        jd, fid, programid = fs.epochs[key]
        image = Image()
        image.jd, image.fid, image.pid = jd, fid, ids.pid(jd, rcid)
        image.diffmaglim = _LIMIT[fid] + rnd.gauss(0.0, 0.35)
        image.zp = _ZEROPOINT[fid] + rnd.gauss(0.0, 0.05)
        image.fp_noise = 10 ** (0.4 * (image.zp - image.diffmaglim)) / 5.0  # forced photometry's 1-sigma flux
        stamp, folder = fs.epoch_paths.get(key) or self._make_epoch_paths(fs, key)
        name = f"ztf_{stamp}_{fs.number:06d}_z{_BANDS[fid]}_c{rcid // 4 + 1:02d}_o_q{rcid % 4 + 1}_scimrefdiffimg.fits"
        common = self._common(image, fs, programid, rcid)
        archive = f"{folder}/{name}.fz"
        image.nondet = {**self.prv_null, **common, "pdiffimfilename": archive, "rbversion": RB_VERSION}
        ref = self._reference(fs, fid, rcid)
        image.fp_base = self._forced_base(image, fs, programid, rcid, ref, common)
        image.cand_base = None
        if key >= fs.n_past:  # tonight: a candidate can come from it
            image.cand_base = self._candidate_base(image, name, ref, common)
        return image

    def _common(self, image: Image, fs: FieldState, programid: int, rcid: int) -> dict:
        """What the image's candidates and non-detections both carry."""
        rnd = self.rnd
        return {
            "jd": image.jd,
            "fid": image.fid,
            "pid": image.pid,
            "diffmaglim": image.diffmaglim,
            "programpi": self.programme_pi.get(programid, "Kulkarni"),
            "programid": programid,
            "nid": ids.nid(image.jd),
            "rcid": rcid,
            "field": fs.number,
            "magzpsci": image.zp,
            "magzpsciunc": rnd.uniform(8e-6, 8e-5),
            "magzpscirms": rnd.uniform(0.02, 0.05),
            "clrcoeff": _COLOUR_COEFF[image.fid] + rnd.gauss(0.0, 0.015),
            "clrcounc": rnd.uniform(1e-5, 8.5e-5),
        }

    def _forced_base(self, image: Image, fs: FieldState, programid: int, rcid: int, ref: dict, common: dict) -> dict:
        """What every forced-photometry entry on this image carries."""
        rnd = self.rnd
        return {
            "field": fs.number,
            "rcid": rcid,
            "fid": image.fid,
            "pid": image.pid,
            "rfid": ref["rfid"],
            "sciinpseeing": rnd.uniform(1.5, 3.5),
            "scibckgnd": _SKY_DN[image.fid] * rnd.uniform(0.6, 2.0),
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
            "jd": image.jd,
        }

    def _candidate_base(self, image: Image, name: str, ref: dict, common: dict) -> dict:
        """What every candidate from this (tonight's) image carries."""
        rnd = self.rnd
        return {
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

    @staticmethod
    def _make_epoch_paths(fs: FieldState, key: int) -> tuple[str, str]:
        """The epoch's image name stamp (when it was requested) and its archive folder: the same for all 64 rcids."""
        jd = fs.epochs[key][0]
        requested = ut_of(jd - 11.0 / 86400.0)
        stamp = f"{requested:%Y%m%d}{int(((jd - 11.0 / 86400.0 + 0.5) % 1.0) * 1e6):06d}"
        paths = fs.epoch_paths[key] = (stamp, f"/ztf/archive/sci/{requested:%Y/%m%d}/{stamp[8:]}")
        return paths

    def _reference(self, fs: FieldState, fid: int, rcid: int) -> dict:
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
