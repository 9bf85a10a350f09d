"""Bundled filters: science cuts as ZTF brokers and science teams use them, each one short and documented.

They read only ``candidate`` (and ``objectId``), so the runners decode the first ~1 KB of each packet and
never the history or the cutouts. Thresholds follow common ZTF practice: real-bogus ``rb`` (Duev et al.
2019's deep real-bogus ``drb`` where the packet has it, from schema 3.3 on), the PS1 star/galaxy score
``sgscore1`` with 0.76 as the star threshold (Tachibana & Miller 2018), and the Minor Planet Center match
(``ssdistnr``/``ssmagnr``/``ssnamenr``). ZTF writes -999 for "no value", and 3.x packets lack ``drb``.

Each has a columnar twin of the same name (``*_columnar`` here) for tables of the Parquet archive's columns: the
same cut on numpy arrays (a null is NaN, which fails every comparison as a missing value fails the per-alert
test), rounding the passing rows' annotations with Python's `round` so both give the same JSON.

Each filter carries an example on 60 simulated alerts (`alertdist.simulate.samples`; the tests run them), and
every columnar twin gives its per-alert filter's verdicts on them:

>>> import contextlib
>>> from alertdist.filters import available_filters, load_filter
>>> from alertdist.filters.columnar import PacketBatches
>>> def twin_agrees(name, packets=_example_packets()):
...     with contextlib.closing(PacketBatches(load_filter(name, columnar=True))) as twin:
...         return twin.judge(packets) == [load_filter(name).judge(p) for p in packets]
>>> {name: twin_agrees(name) for name in available_filters(columnar=True)}
{'bright_transients': True, 'solar_system': True, 'variable_stars': True}
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alertdist.filters import alert_filter

__all__ = [
    "bright_transients",
    "bright_transients_columnar",
    "solar_system",
    "solar_system_columnar",
    "variable_stars",
    "variable_stars_columnar",
]

STAR_SCORE = 0.76  # sgscore1 at or above this: a PS1 point source (a star)
EXAMPLE_VERSION, EXAMPLE_ALERTS = "4.02", 60  # what the examples run on


@functools.cache
def _example_packets() -> tuple[bytes, ...]:
    """The examples' packets: simulated, in the newest schema, the same bytes every time."""
    from alertdist.simulate.samples import sample_alerts

    return tuple(a.packet for a in sample_alerts(EXAMPLE_VERSION, EXAMPLE_ALERTS))


@functools.cache
def _example_alerts() -> tuple[dict, ...]:
    """The examples' packets decoded, as a per-alert filter gets them."""
    from alertdist.avro.codec import decode

    return tuple(decode(packet) for packet in _example_packets())


def _real(candidate: dict, drb_min: float, rb_min: float) -> bool:
    """Real-bogus cut: deep real-bogus where the packet has it, else the older random-forest score."""
    drb = candidate.get("drb")
    if drb is not None:
        return drb >= drb_min
    rb = candidate.get("rb")
    return rb is not None and rb >= rb_min


def _positive(candidate: dict) -> bool:
    """The science image is brighter than the reference (ZTF writes 't'/'f'; some old tools '1'/'0')."""
    return candidate.get("isdiffpos") in ("t", "1")


def _known(value: float | None) -> bool:
    return value is not None and value > -999.0


@alert_filter(name="bright_transients", fields=("objectId", "candidate"))
def bright_transients(alert: dict):
    """New bright extragalactic transients: the cut behind supernova searches such as the Bright Transient Survey.

    Passes a detection that is real (drb >= 0.8, or rb >= 0.65 before drb existed), positive (isdiffpos 't'),
    bright (magpsf <= 19.5), new (at most 10 detections at this position, the first within 30 days:
    ndethist, jd - jdstarthist), free of bad pixels (nbad == 0), not a star (no PS1 point source,
    sgscore1 >= 0.76, within 2") and not a known asteroid (no Solar System object within 12").
    Annotates the real-bogus score, magnitude, band, detections and age in days.

    >>> passed = [verdict for verdict in map(bright_transients, _example_alerts()) if verdict]
    >>> len(passed), passed[0]
    (2, (True, {'score': 1.0, 'magpsf': 18.684, 'fid': 2, 'ndethist': 1, 'age_days': 0.0}))
    """
    c = alert["candidate"]
    if not (_real(c, 0.8, 0.65) and _positive(c)):
        return False
    age_days = c["jd"] - c["jdstarthist"] if c.get("jdstarthist") is not None else 0.0
    if c["magpsf"] > 19.5 or c["ndethist"] > 10 or age_days > 30.0 or c.get("nbad") != 0:
        return False
    sgscore, distance = c.get("sgscore1"), c.get("distpsnr1")
    if _known(sgscore) and sgscore >= STAR_SCORE and _known(distance) and distance <= 2.0:
        return False
    ssdistnr = c.get("ssdistnr")
    if _known(ssdistnr) and 0 <= ssdistnr <= 12.0:
        return False
    score = c["drb"] if c.get("drb") is not None else c["rb"]
    return True, {
        "score": round(score, 4),
        "magpsf": round(c["magpsf"], 3),
        "fid": c["fid"],
        "ndethist": c["ndethist"],
        "age_days": round(age_days, 3),
    }


@alert_filter(name="solar_system", fields=("objectId", "candidate"))
def solar_system(alert: dict):
    """Known Solar System objects: a positive, real detection within 5" of an MPC-catalogued body.

    ZTF matches every candidate against the Minor Planet Center's orbits at the exposure time: ``ssnamenr``
    (the string 'null' when nothing matched), its distance ``ssdistnr`` (arcsec, -999 if none) and predicted
    V magnitude ``ssmagnr``. Passes when a body is within 5", has a predicted magnitude, and the detection is
    real (drb >= 0.5 or rb >= 0.5) and positive. Annotates the body, distance, predicted magnitude and the
    observed-minus-predicted magnitude (a large |dmag| hints at activity or a wrong match).

    >>> bodies = [verdict[1]["ssnamenr"] for verdict in map(solar_system, _example_alerts()) if verdict]
    >>> len(bodies), bodies[0]
    (4, '110692')
    """
    c = alert["candidate"]
    name, distance, predicted = c.get("ssnamenr"), c.get("ssdistnr"), c.get("ssmagnr")
    if name in (None, "", "null") or not _known(distance) or not _known(predicted):
        return False
    if not (0 <= distance <= 5.0 and predicted > 0):
        return False
    if not (_real(c, 0.5, 0.5) and _positive(c)):
        return False
    return True, {
        "ssnamenr": name,
        "ssdistnr": round(distance, 3),
        "ssmagnr": round(predicted, 2),
        "dmag": round(c["magpsf"] - predicted, 3),
    }


@alert_filter(name="variable_stars", fields=("objectId", "candidate"))
def variable_stars(alert: dict):
    """Variable stars: a real detection on a known star whose total brightness changed by 0.1 mag or more.

    A star: a PS1 point source (sgscore1 >= 0.76) within 1.5" that is also the nearest source in ZTF's own
    reference image (distnr <= 1.5", with its PSF magnitude magnr). Seen before (ndethist >= 10) and real
    (drb >= 0.5 or rb >= 0.5). The difference flux is added to (isdiffpos 't') or taken from ('f') the
    reference flux to give the star's apparent magnitude now ("DC magnitude"); passes when it differs from
    the reference by at least 0.1 mag. Annotates the DC magnitude and the change (negative: brighter).

    >>> changes = [verdict[1] for verdict in map(variable_stars, _example_alerts()) if verdict]
    >>> len(changes), changes[0]
    (20, {'dc_mag': 14.084, 'change': -0.202, 'fid': 2})
    """
    c = alert["candidate"]
    sgscore, to_ps1, to_ref, magnr = c.get("sgscore1"), c.get("distpsnr1"), c.get("distnr"), c.get("magnr")
    if not (_known(sgscore) and sgscore >= STAR_SCORE and _known(to_ps1) and 0 <= to_ps1 <= 1.5):
        return False
    if not (_known(to_ref) and 0 <= to_ref <= 1.5 and _known(magnr) and magnr > 0):
        return False
    if c["ndethist"] < 10 or not _real(c, 0.5, 0.5):
        return False
    sign = 1.0 if _positive(c) else -1.0
    flux = 10 ** (-0.4 * magnr) + sign * 10 ** (-0.4 * c["magpsf"])
    if flux <= 0:  # a negative total flux: the reference magnitude is unreliable here
        return False
    dc_mag = -2.5 * math.log10(flux)
    change = dc_mag - magnr
    if abs(change) < 0.1:
        return False
    return True, {"dc_mag": round(dc_mag, 3), "change": round(change, 3), "fid": c["fid"]}


# ------------------------------------------------------------------------------------------- columnar twins


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 with NaN for null (an absent column: all NaN, as an older version's field is null)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table[name].cast(pa.float64()).to_numpy(zero_copy_only=False)


def _real_rows(table: pa.Table, drb_min: float, rb_min: float) -> np.ndarray:
    drb, rb = _numbers(table, "drb"), _numbers(table, "rb")
    return np.where(np.isnan(drb), rb >= rb_min, drb >= drb_min)


def _positive_rows(table: pa.Table) -> np.ndarray:
    return pc.is_in(table["isdiffpos"], value_set=pa.array(["t", "1"])).fill_null(False).to_numpy(zero_copy_only=False)


def _known_rows(values: np.ndarray) -> np.ndarray:
    return values > -999.0


def _rounded(values: np.ndarray, passed: np.ndarray, digits: int) -> np.ndarray:
    """Python's `round` on the passing rows only (numpy's rounds differently at the last digit), None elsewhere."""
    out = np.full(len(values), None, dtype=object)
    rows = np.flatnonzero(passed)
    out[rows] = [round(float(v), digits) for v in values[rows]]
    return out


_CANDIDATE_COLUMNS = ("drb", "rb", "isdiffpos", "magpsf", "fid", "sgscore1", "distpsnr1", "ssdistnr", "ndethist")


@alert_filter(
    name="bright_transients",
    columnar=True,
    columns=(*_CANDIDATE_COLUMNS, "jd", "jdstarthist", "nbad"),
)
def bright_transients_columnar(table: pa.Table):
    """`bright_transients` on a table of alerts: the same cut and annotations, a numpy expression per criterion
    (the module's example checks that they agree)."""
    mag, ndethist, nbad = _numbers(table, "magpsf"), _numbers(table, "ndethist"), _numbers(table, "nbad")
    start = _numbers(table, "jdstarthist")
    age_days = np.where(np.isnan(start), 0.0, _numbers(table, "jd") - start)
    sgscore, distance, ssdistnr = (_numbers(table, n) for n in ("sgscore1", "distpsnr1", "ssdistnr"))
    star = _known_rows(sgscore) & (sgscore >= STAR_SCORE) & _known_rows(distance) & (distance <= 2.0)
    asteroid = _known_rows(ssdistnr) & (ssdistnr >= 0) & (ssdistnr <= 12.0)
    passed = (
        _real_rows(table, 0.8, 0.65)
        & _positive_rows(table)
        & (mag <= 19.5)
        & (ndethist <= 10)
        & (age_days <= 30.0)
        & (nbad == 0)
        & ~star
        & ~asteroid
    )
    drb = _numbers(table, "drb")
    score = np.where(np.isnan(drb), _numbers(table, "rb"), drb)
    return passed, {
        "score": _rounded(score, passed, 4),
        "magpsf": _rounded(mag, passed, 3),
        "fid": table["fid"],
        "ndethist": table["ndethist"],
        "age_days": _rounded(age_days, passed, 3),
    }


@alert_filter(name="solar_system", columnar=True, columns=(*_CANDIDATE_COLUMNS, "ssnamenr", "ssmagnr"))
def solar_system_columnar(table: pa.Table):
    """`solar_system` on a table of alerts: the same cut and annotations."""
    names = table["ssnamenr"]
    named = pc.and_(pc.is_valid(names), pc.invert(pc.is_in(names, value_set=pa.array(["", "null"]))))
    named = named.to_numpy(zero_copy_only=False)
    distance, predicted = _numbers(table, "ssdistnr"), _numbers(table, "ssmagnr")
    passed = (
        named
        & _known_rows(distance)
        & _known_rows(predicted)
        & (distance >= 0)
        & (distance <= 5.0)
        & (predicted > 0)
        & _real_rows(table, 0.5, 0.5)
        & _positive_rows(table)
    )
    return passed, {
        "ssnamenr": names,
        "ssdistnr": _rounded(distance, passed, 3),
        "ssmagnr": _rounded(predicted, passed, 2),
        "dmag": _rounded(_numbers(table, "magpsf") - predicted, passed, 3),
    }


@alert_filter(name="variable_stars", columnar=True, columns=(*_CANDIDATE_COLUMNS, "distnr", "magnr"))
def variable_stars_columnar(table: pa.Table):
    """`variable_stars` on a table of alerts: the same cut and annotations."""
    sgscore, to_ps1, to_ref, magnr = (_numbers(table, n) for n in ("sgscore1", "distpsnr1", "distnr", "magnr"))
    star = _known_rows(sgscore) & (sgscore >= STAR_SCORE) & _known_rows(to_ps1) & (to_ps1 >= 0) & (to_ps1 <= 1.5)
    star &= _known_rows(to_ref) & (to_ref >= 0) & (to_ref <= 1.5) & _known_rows(magnr) & (magnr > 0)
    seen = star & (_numbers(table, "ndethist") >= 10) & _real_rows(table, 0.5, 0.5)
    sign = np.where(_positive_rows(table), 1.0, -1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = 10 ** (-0.4 * magnr) + sign * 10 ** (-0.4 * _numbers(table, "magpsf"))
        dc_mag = np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
    change = dc_mag - magnr
    passed = seen & (flux > 0) & (np.abs(change) >= 0.1)
    return passed, {
        "dc_mag": _rounded(dc_mag, passed, 3),
        "change": _rounded(change, passed, 3),
        "fid": table["fid"],
    }
