"""Photometry of simulated detections: the shape measurements drawn once per night, each detection's magnitudes,
classifier scores and position, an object's 30-day past, and forced photometry on any image."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from alertdist.simulate import ids
from alertdist.simulate.images import FieldState, Image, ImageMaker
from alertdist.simulate.sky import QUADRANT_PIX, offset

if TYPE_CHECKING:
    from alertdist.simulate.objects import SimObject

__all__ = ["Photometry", "measurement_pool"]

FP_DAYS = 20  # fp_hists reach back this far (the real 4.01 packets carry 9-21 entries)
_MEASURE_POOL = 512


class Photometry:
    """Measures objects on images; `good` and `bogus` are the night's pools of (shared, candidate-only) shapes."""

    def __init__(
        self,
        images: ImageMaker,
        good: list[tuple[dict, dict]],
        bogus: list[tuple[dict, dict]],
        night_start_jd: float,
    ):
        self.images = images
        self.good = good
        self.bogus = bogus
        self.fp_from = night_start_jd - FP_DAYS

    def measure(self, obj: SimObject, image: Image, rnd: random.Random) -> tuple[dict, dict, float]:
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
        ra, dec = offset(obj.ra, obj.dec, abs(rnd.gauss(0.0, 0.1)), rnd)
        if kind == "bogus":
            rb, drb, positive = rnd.uniform(0.15, 0.6), rnd.uniform(0.0, 0.45), rnd.random() < 0.5
            shape, extra = rnd.choice(self.bogus)
        else:
            if kind == "transient":
                rb, drb, positive = rnd.uniform(0.66, 0.98), 1.0 - 10 ** rnd.uniform(-6.0, -1.1), True
            elif kind == "asteroid":
                rb, drb, positive = rnd.uniform(0.4, 0.85), 1.0 - 10 ** rnd.uniform(-6.0, -1.3), True
            else:
                rb = min(0.99, max(0.3, rnd.gauss(0.7, 0.12)))
                drb = 1.0 - 10 ** rnd.uniform(-6.0, -0.2) if rnd.random() < 0.9 else rnd.uniform(0.1, 0.8)
                positive = rnd.random() < (0.6 if kind == "variable" else 0.7)
            shape, extra = rnd.choice(self.good)
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

    def past(self, fs: FieldState, obj: SimObject) -> tuple[list[dict], list[dict]]:
        """The object's prv_candidates (oldest first) and fp_hists (newest first) from the field's past epochs.

        A pure function of the object's own seed and the field's images: an object seen again tonight gets its
        past rebuilt rather than kept, which holds a big night's memory to what one block of fields needs.
        """
        rnd = random.Random(obj.past_seed)
        onset = obj.onset
        p_detect = {"variable": 0.55, "nuclear": 0.35, "transient": 0.85}.get(obj.kind, 0.0)
        p_positive = {"variable": 0.6, "nuclear": 0.7}.get(obj.kind, 1.0)
        prv, fp = [], []
        shape = None  # measured once; past detections then differ only in photometry, to keep this cheap
        for key in range(fs.n_past):
            image = self.images.image(fs, key, obj.rcid)
            m = None
            if onset is not None and image.jd >= onset and rnd.random() < p_detect:
                if shape is None:
                    shape = {**obj.ref_match, **self.measure(obj, image, rnd)[0]}
                m = _past_detection(obj, image, shape, p_positive, rnd)
                prv.append(m)
            else:
                prv.append(image.nondet)
            if image.jd >= self.fp_from:
                fp.append(self.forced(obj, image, m, rnd))
        return prv, fp[::-1]

    @staticmethod
    def forced(obj: SimObject, image: Image, measured: dict | None, rnd: random.Random) -> dict:
        """Forced photometry at the object's place on `image` (with its flux if it was `measured` there)."""
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


def _past_detection(obj: SimObject, image: Image, shape: dict, p_positive: float, rnd: random.Random) -> dict:
    """A past detection: the object's one measured shape with this image's photometry."""
    limit = image.diffmaglim
    mag = min(obj.mag + rnd.gauss(0.0, obj.amp), limit + 0.1)
    sigma = max(0.02, 1.0857 / (5.0 * 10 ** (0.24 * (limit - mag))))
    sign = "t" if rnd.random() < p_positive else "f"
    tblid = rnd.randrange(300)
    return {
        **image.nondet,
        **shape,
        "magpsf": mag,
        "sigmapsf": sigma,
        "magap": mag + shape["magdiff"],
        "magapbig": mag + shape["magdiff"] + 0.02,
        "magfromlim": limit - mag - shape["magdiff"],
        "isdiffpos": sign,
        "tblid": tblid,
        "candid": ids.candid(image.pid, sign, tblid),
    }


def measurement_pool(nrng: np.random.Generator, *, bogus: bool) -> list[tuple[dict, dict]]:
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
