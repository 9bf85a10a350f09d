"""ZTF's identifiers as the real packets show them: nid, pid, objectId and Pan-STARRS1 objID.

- nid = days since 2017-01-01 UT; pid = nid·10^9 + ⌊UT-day fraction·10^5⌋·10^4 + rcid·100 + 15, so the 64
  readout quadrants of one exposure share jd and nid but each has its own pid;
- candid = pid·10^6 + (15 for a positive subtraction, 10 for a negative one)·10^3 + tblid;
- objectId = 'ZTF' + the year of first detection + 7 letters from a counter (~57k new objects a day).
"""

from __future__ import annotations

import random

from alertdist.simulate.sky import ut_of

__all__ = ["ObjectNamer", "candid", "nid", "pid", "ps1_objid"]

NID_EPOCH_JD = 2457754.5  # 2017-01-01 UT: jd 2460229.93 has nid 2475 in the real packets
NEW_OBJECTS_PER_DAY = 56_700  # ZTF's name counter was at 'abjjn..' (~16.2 M) on 2023-10-12, day 285


def nid(jd: float) -> int:
    return int(jd - NID_EPOCH_JD)


def pid(jd: float, rcid: int) -> int:
    return nid(jd) * 10**9 + int(((jd + 0.5) % 1.0) * 1e5) * 10**4 + rcid * 100 + 15


def candid(image_pid: int, isdiffpos: str, tblid: int) -> int:
    return image_pid * 10**6 + (15 if isdiffpos == "t" else 10) * 1000 + tblid


def ps1_objid(ra: float, dec: float) -> int:
    """Pan-STARRS1 objID layout: zone (1/120°) · 10^13 + RA in µdeg · 10^4 + position within the zone."""
    zone = (dec + 90.0) * 120.0
    return int(zone) * 10**13 + int(ra * 1e6) * 10**4 + int((zone - int(zone)) * 1e4)


def _object_letters(counter: int) -> str:
    letters = []
    for _ in range(7):
        counter, digit = divmod(counter, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters))


class ObjectNamer:
    """Fresh objectIds for one night, never the same twice: tonight's counter, or a past date's for old objects."""

    def __init__(self, night_start_jd: float, rnd: random.Random):
        self.rnd = rnd
        self.used_ids: set[str] = set()
        start = ut_of(night_start_jd)
        self.next_counter = (start.timetuple().tm_yday - 1) * NEW_OBJECTS_PER_DAY + rnd.randrange(20_000)
        self.tonight_year = start.year % 100

    def new_id(self, first_jd: float | None) -> str:
        """A fresh objectId: tonight's counter for objects first seen now, else one from the first detection's date."""
        while True:
            if first_jd is None:
                year, counter = self.tonight_year, self.next_counter
                self.next_counter += 1
            else:
                first = ut_of(first_jd)
                year = first.year % 100
                counter = (first.timetuple().tm_yday - 1) * NEW_OBJECTS_PER_DAY + self.rnd.randrange(
                    NEW_OBJECTS_PER_DAY
                )
            object_id = f"ZTF{year:02d}{_object_letters(counter)}"
            if object_id not in self.used_ids:
                self.used_ids.add(object_id)
                return object_id
