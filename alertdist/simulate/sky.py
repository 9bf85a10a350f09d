"""Where and when a simulated night happens: Palomar's almanac, a ZTF-like field grid and sky positions.

Low-precision formulas (~1 arcmin) are enough: they only have to put exposures between twilights and fields
near the meridian, the way ZTF's own scheduler does.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from alertdist.nights.dates import JD_UNIX_EPOCH, jd_of

__all__ = [
    "PIXEL_DEG",
    "QUADRANT_PIX",
    "field_grid",
    "lst_deg",
    "night_window",
    "offset",
    "sky_position",
    "ut_of",
]

PALOMAR_LAT_DEG = 33.3563
PALOMAR_LON_DEG = -116.8650
TWILIGHT_ALT_DEG = -12.0  # ZTF observes between nautical twilights
QUADRANT_PIX = (3072, 3080)
PIXEL_DEG = 1.012 / 3600


def ut_of(jd: float) -> datetime:
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


def lst_deg(jd: float) -> float:
    return (280.46061837 + 360.98564736629 * (jd - 2451545.0) + PALOMAR_LON_DEG) % 360.0


@lru_cache(maxsize=1)
def field_grid() -> tuple[tuple[float, float], ...]:
    """Centres of a ZTF-like tiling of the sky in 7.0° dec bands; field number = index + 1 (not ZTF's own grid)."""
    centres = []
    dec = -86.5
    while dec < 90.0:
        n = max(1, math.ceil(360.0 * math.cos(math.radians(dec)) / 7.4))
        centres.extend(((i + 0.5) * 360.0 / n, dec) for i in range(n))
        dec += 7.0
    return tuple(centres)


def sky_position(centre: tuple[float, float], rcid: int, x: float, y: float) -> tuple[float, float]:
    """RA/Dec of pixel (x, y) of readout quadrant `rcid`: 16 CCDs in 4x4, each 2x2 quadrants, ~7° across."""
    ccd, quad = divmod(rcid, 4)
    col = 2 * (ccd % 4) + quad % 2
    row = 2 * (ccd // 4) + quad // 2
    dec = centre[1] + (row - 4) * QUADRANT_PIX[1] * PIXEL_DEG + y * PIXEL_DEG
    ra = centre[0] + ((col - 4) * QUADRANT_PIX[0] * PIXEL_DEG + x * PIXEL_DEG) / math.cos(math.radians(dec))
    return round(ra % 360.0, 7), round(dec, 7)


def offset(ra: float, dec: float, arcsec: float, rnd: random.Random) -> tuple[float, float]:
    """A position `arcsec` away from (ra, dec) in a random direction."""
    angle = rnd.uniform(0.0, 2 * math.pi)
    d_dec = arcsec * math.sin(angle) / 3600.0
    d_ra = arcsec * math.cos(angle) / 3600.0 / max(0.05, math.cos(math.radians(dec)))
    return round((ra + d_ra) % 360.0, 7), round(dec + d_dec, 7)
