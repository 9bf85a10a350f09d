"""Simulated ZTF nights: deterministic, realistic alert packets for tests at scale and for benchmarks.

Why simulate: the real packets we may use are a few dozen public alerts. The publisher, the archivers and the
filters need whole nights (10^5 alerts, three programmes, bursts per exposure, objects seen again and again)
that look like ZTF's to every consumer, and the same bytes on every run so that a failure can be replayed.
What the real packets pin down is in `ids` (and checked in tests/test_simulate.py).

How it stays fast and small: gzipping stamps is the costly part of building an alert, so a night draws them from
a pool made once per seed; a non-detection record is shared by every object of its quadrant image; an object's
30-day past is a function of its own seed, rebuilt when it recurs rather than kept, and a field's state is dropped
after its last visit (a 100k-alert night peaks near 300 MB). Encoding (alertdist.avro.codec) costs ~90% of the time.

This module runs the night exposure by exposure and assembles each alert; the parts it assembles are made by
`plan`, `images`, `objects`, `photometry` and `stamps`. One random stream (`_Night.rnd`) feeds them all in a
fixed order, which is what makes the same arguments give the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from types import MappingProxyType

import numpy as np

from alertdist import schemas
from alertdist.avro import codec
from alertdist.simulate import ids
from alertdist.simulate.cutouts import make_triplet_pool
from alertdist.simulate.drop import DropCounts, write_drop_folder
from alertdist.simulate.images import FieldState, Image, ImageMaker, past_epochs
from alertdist.simulate.objects import KIND_WEIGHTS, KINDS, PERSISTENT, ObjectMaker, SimObject
from alertdist.simulate.photometry import Photometry, measurement_pool
from alertdist.simulate.plan import Exposure, plan
from alertdist.simulate.records import PUBLISHER, Shape, SimulatedAlert
from alertdist.simulate.sky import night_window
from alertdist.simulate.stamps import StampPicker
from alertdist.simulate.templates import from_templates

__all__ = [
    "DEFAULT_PROGRAMME_WEIGHTS",
    "DropCounts",
    "SimulatedAlert",
    "night_window",
    "simulate_night",
    "write_drop_folder",
]

DEFAULT_PROGRAMME_WEIGHTS: Mapping[int, float] = MappingProxyType({1: 0.5, 2: 0.4, 3: 0.1})
_REDETECT_SHARE = 0.5  # of an exposure's alerts on a field already visited tonight, those of known objects


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
        self.shape = Shape(schema_version)
        self.full = Shape(schemas.LATEST_VERSION)
        self.rnd = random.Random(f"ztf-night:{seed}:{night.isoformat()}")
        nrng = np.random.default_rng([seed, night.toordinal()])
        self.window = night_window(night)
        self.plan = plan(n_alerts, self.window, weights, self.rnd, nrng)
        self.programmes = sorted({e.programid for e in self.plan})
        self.images = ImageMaker(self.rnd, weights, dict.fromkeys(self.full.candidate), dict.fromkeys(self.full.prv))
        self.fields: dict[int, FieldState] = {}
        namer = ids.ObjectNamer(self.window[0], self.rnd)
        stamp_rng = np.random.default_rng([seed, night.toordinal(), 1])
        pool = make_triplet_pool(stamp_rng, max(16, min(256, n_alerts // 8)))
        measure_good = measurement_pool(nrng, bogus=False)
        measure_bogus = measurement_pool(nrng, bogus=True)
        if templates is not None:
            pool, measure_good = from_templates(templates, pool, measure_good)
        self.stamps = StampPicker(pool, self.rnd)
        self.photometry = Photometry(self.images, measure_good, measure_bogus, self.window[0])
        self.objects = ObjectMaker(self.rnd, namer, self.photometry)

    def alerts(self) -> Iterator[SimulatedAlert]:
        for exposure in self.plan:
            fs = self.fields.get(exposure.field)
            if fs is None:
                fs = self.fields[exposure.field] = FieldState(
                    exposure.field, past_epochs(self.rnd, self.window, self.programmes)
                )
            visit = len(fs.epochs) - fs.n_past
            fs.epochs.append((exposure.jd, exposure.fid, exposure.programid))
            yield from self._exposure_alerts(exposure, fs, visit)
            if exposure.last_visit:
                del self.fields[exposure.field]

    def _exposure_alerts(self, exposure: Exposure, fs: FieldState, visit: int) -> Iterator[SimulatedAlert]:
        rnd = self.rnd
        k = exposure.n_alerts
        known = fs.objects if visit > 0 else []
        n_again = min(len(known), sum(rnd.random() < _REDETECT_SHARE for _ in range(k))) if known else 0
        objects = rnd.sample(known, n_again) if n_again else []
        kinds = rnd.choices(KINDS, KIND_WEIGHTS, k=k - n_again)
        for kind in kinds:
            obj = self.objects.new(fs, kind, exposure.jd)
            objects.append(obj)
            if kind in PERSISTENT:
                fs.objects.append(obj)
        objects.sort(key=lambda o: o.rcid)
        tblids: dict[int, int] = {}
        for obj in objects:
            tblid = tblids.get(obj.rcid, 0)
            tblids[obj.rcid] = tblid + 1
            if tblid >= 1000:  # candid keeps 3 digits for it
                raise ValueError(f"cannot simulate exposure {exposure.index}: over 1000 alerts in quadrant {obj.rcid}")
            yield self._alert(exposure, fs, visit, obj, tblid)

    def _alert(self, exposure: Exposure, fs: FieldState, visit: int, obj: SimObject, tblid: int) -> SimulatedAlert:
        rnd = self.rnd
        image = self.images.image(fs, fs.n_past + visit, obj.rcid)
        m, extra, drb = self.photometry.measure(obj, image, rnd)
        candid = ids.candid(image.pid, m["isdiffpos"], tblid)
        candidate = self._candidate(exposure, visit, obj, image, m, extra, drb, candid, tblid)
        prv, fp = self._histories(fs, visit, obj)
        if obj.kind in PERSISTENT:
            obj.tonight_prv[visit] = {**image.nondet, **obj.ref_match, **m, "candid": candid, "tblid": tblid}
            obj.tonight_fp[visit] = self.photometry.forced(obj, image, m, rnd)
        record = {
            "schemavsn": self.shape.version,
            "publisher": PUBLISHER,
            "objectId": obj.object_id,
            "candid": candid,
            "candidate": candidate,
            "prv_candidates": prv,
            "fp_hists": fp,
            **self.stamps.cutouts(candid, image, m, obj.kind),
        }
        return SimulatedAlert(
            packet=codec.encode(self.shape.fit(record, self.full), self.shape.version, check=False),
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

    def _candidate(
        self,
        exposure: Exposure,
        visit: int,
        obj: SimObject,
        image: Image,
        m: dict,
        extra: dict,
        drb: float,
        candid: int,
        tblid: int,
    ) -> dict:
        """The alert's candidate record; counts the detection in the object's history."""
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
            candidate["ssmagnr"] = round(m["magpsf"] + self.rnd.gauss(0.0, 0.3), 1)
        return candidate

    def _histories(self, fs: FieldState, visit: int, obj: SimObject) -> tuple[list[dict], list[dict]]:
        """The alert's prv_candidates (oldest first) and fp_hists (newest first): the past, then tonight's visits."""
        past_prv, past_fp = obj.past or self.photometry.past(fs, obj)
        obj.past = None
        prv = past_prv + [
            obj.tonight_prv.get(i) or self.images.image(fs, fs.n_past + i, obj.rcid).nondet for i in range(visit)
        ]
        fp = [self._tonight_forced(fs, obj, i) for i in range(visit - 1, -1, -1)] + past_fp
        return prv, fp

    def _tonight_forced(self, fs: FieldState, obj: SimObject, visit: int) -> dict:
        entry = obj.tonight_fp.get(visit)
        if entry is None:
            image = self.images.image(fs, fs.n_past + visit, obj.rcid)
            entry = obj.tonight_fp[visit] = self.photometry.forced(obj, image, None, self.rnd)
        return entry


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
