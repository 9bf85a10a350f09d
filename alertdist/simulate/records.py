"""What the simulator hands out: `SimulatedAlert`, and the record cut to the schema version asked for."""

from __future__ import annotations

from dataclasses import dataclass

from alertdist import schemas

__all__ = ["PUBLISHER", "Shape", "SimulatedAlert"]

PUBLISHER = "ZTF (www.ztf.caltech.edu)"


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


class Shape:
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

    def fit(self, record: dict, full: Shape) -> dict:
        """`record`, built in the `full` shape (4.02, the superset of all), cut down to this version's fields."""
        if self.candidate == full.candidate and self.prv == full.prv and self.fp == full.fp:
            return record
        out = {k: record[k] for k in self.top}
        out["candidate"] = {k: record["candidate"][k] for k in self.candidate}
        out["prv_candidates"] = [{k: p[k] for k in self.prv} for p in record["prv_candidates"]]
        if self.fp is not None:
            out["fp_hists"] = [{k: p[k] for k in self.fp} for p in record["fp_hists"]]
        return out
