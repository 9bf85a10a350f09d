"""The night's objects: what kind each is (variable star, nucleus, transient, asteroid or bogus), its brightness,
its place, its counterparts in reference catalogues, and its detection history."""

from __future__ import annotations

import math
import random

from alertdist.simulate.ids import ObjectNamer, ps1_objid
from alertdist.simulate.images import FieldState
from alertdist.simulate.photometry import Photometry
from alertdist.simulate.sky import QUADRANT_PIX, offset, sky_position

__all__ = ["KINDS", "KIND_WEIGHTS", "PERSISTENT", "ObjectMaker", "SimObject"]

# Share of new detections by astrophysical kind; "transient" alerts are made to pass typical science cuts.
KINDS = ("variable", "nuclear", "transient", "asteroid", "bogus")
KIND_WEIGHTS = (0.42, 0.06, 0.07, 0.04, 0.41)
PERSISTENT = frozenset({"variable", "nuclear", "transient"})  # can be detected again tonight at the same place


class SimObject:
    """One object on the sky: fixed facts made once, and tonight's detections and forced photometry by visit."""

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


class ObjectMaker:
    """Makes new objects from the night's random stream, named by the night's `ObjectNamer`."""

    def __init__(self, rnd: random.Random, namer: ObjectNamer, photometry: Photometry):
        self.rnd = rnd
        self.namer = namer
        self.photometry = photometry

    def new(self, fs: FieldState, kind: str, jd: float) -> SimObject:
        """An object of `kind` first detected tonight at `jd` on field `fs`, with its past already built."""
        rnd = self.rnd
        obj = SimObject()
        obj.kind = kind
        obj.rcid = rnd.randrange(64)
        obj.x, obj.y = rnd.uniform(10.0, QUADRANT_PIX[0] - 10.0), rnd.uniform(10.0, QUADRANT_PIX[1] - 10.0)
        obj.ra, obj.dec = sky_position(fs.centre, obj.rcid, obj.x, obj.y)
        obj.tonight_prv, obj.tonight_fp = {}, {}
        magnr, distnr, star, onset = self._brightness(obj, jd)  # onset: jd of the first detection before tonight
        obj.object_id = self.namer.new_id(onset)
        obj.jdstarthist = round(onset, 7) if onset is not None else jd
        ranr, decnr = offset(obj.ra, obj.dec, distnr, rnd)
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
        obj.static.update(self._solar_system(kind))
        obj.ndethist = (
            int(min(1500, rnd.lognormvariate(4.3, 1.0))) + 5 if onset is not None and kind != "transient" else 0
        )
        obj.ncovhist = 0
        obj.onset, obj.past_seed = onset, rnd.getrandbits(64)
        obj.past = self.photometry.past(fs, obj)
        obj.ndethist += sum(p["candid"] is not None for p in obj.past[0])
        if onset is not None and kind == "transient" and obj.ndethist == 0:
            obj.jdstarthist = None  # not seen after all: its first detection is tonight's
        obj.ncovhist = max(obj.ndethist + 1, int(rnd.uniform(150, 2400)))
        return obj

    def _brightness(self, obj: SimObject, jd: float) -> tuple[float, float, float, float | None]:
        """Sets the object's mean magnitude and scatter; returns its reference counterpart's magnitude, distance
        and star-likeness, and the onset of its detections before tonight (None if it has none)."""
        rnd, kind = self.rnd, obj.kind
        onset = None
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
        return magnr, distnr, star, onset

    def _solar_system(self, kind: str) -> dict:
        """The nearest known solar-system object: an asteroid's own, -999 for everything else."""
        rnd = self.rnd
        if kind == "asteroid":
            return {
                "ssdistnr": float(round(rnd.uniform(0.0, 3.0))),
                "ssnamenr": str(int(math.exp(rnd.uniform(6.0, 13.3)))),
            }
        return {"ssdistnr": -999.0, "ssmagnr": -999.0, "ssnamenr": "null"}

    def _neighbours(self, obj: SimObject, kind: str, distnr: float, magnr: float, star: float) -> dict:
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
            pra, pdec = offset(obj.ra, obj.dec, dist, rnd)
            out[f"objectidps{n}"] = ps1_objid(pra, pdec)
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
