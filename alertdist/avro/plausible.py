"""Is an alert's identity plausible? The one check of every field the system computes with, before it computes.

A packet can fit its schema and still stop a night: a NaN or 1e300 ``jd`` makes the night of the alert (and a tar
member's mtime) raise, a negative ``candid`` never matches its archived name, an objectId with a newline or 10 KB
of text becomes a Kafka key and a log line. Every stage that first looks at a packet (publisher, archiver, live
and batch filters, replay, mirror) asks `alert_problem` and sets the packet aside with the answer; none repeats
the rule.

The ranges, and why:
- ``jd``: finite and within the ZTF era, 2458000.5 (2017-09-04, two months before ZTF's first light on
  2017-11-01) to 2470000.5 (2050-07-13). Wide enough for every real packet and any simulated night this century
  needs, narrow enough that a night date and a Unix time computed from it always exist.
- ``candid`` and ``pid``: positive 64-bit integers (Parquet and Kafka headers hold them as int64; a tarball
  member is named ``<candid>.avro``).
- ``programid``: one of ZTF's programmes, 0 (engineering/calibration), 1 (public), 2 (partnership), 3 (Caltech),
  or a deployment's own set when the caller passes it.
- ``objectId``: 1-64 printable ASCII characters without spaces (ZTF's are 12, e.g. ``ZTF18abcdefg``): it is a
  Kafka key, a log line and a file-name part.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection

__all__ = ["JD_RANGE", "KNOWN_PROGRAMIDS", "MAX_OBJECT_ID_CHARS", "alert_problem"]

JD_RANGE = (2458000.5, 2470000.5)  # [first, last): see the module docstring
KNOWN_PROGRAMIDS = frozenset({0, 1, 2, 3})
MAX_OBJECT_ID_CHARS = 64
_INT64_MAX = (1 << 63) - 1
_UNCHECKED = object()


def alert_problem(
    *,
    objectId: object = _UNCHECKED,
    candid: object = _UNCHECKED,
    programid: object = _UNCHECKED,
    jd: object = _UNCHECKED,
    pid: object = _UNCHECKED,
    programids: Collection[int] = KNOWN_PROGRAMIDS,
) -> str | None:
    """None if every field given is plausible, else what is wrong with the first that is not (one line, no
    newline, the value shown short). Fields not passed are not checked: a stage passes what it has read."""
    if jd is not _UNCHECKED:
        if not _is_real(jd) or not math.isfinite(jd):
            return f"candidate.jd is {_shown(jd)}, not a finite Julian date"
        if not JD_RANGE[0] <= jd < JD_RANGE[1]:
            return f"candidate.jd {jd!r} is outside the ZTF era ({JD_RANGE[0]} <= jd < {JD_RANGE[1]})"
    for name, value in (("candid", candid), ("candidate.pid", pid)):
        if value is not _UNCHECKED and not (_is_integer(value) and 0 < value <= _INT64_MAX):
            return f"{name} is {_shown(value)}, not a positive 64-bit integer"
    if programid is not _UNCHECKED and not (_is_integer(programid) and programid in programids):
        return f"candidate.programid is {_shown(programid)}, not one of the programmes {sorted(programids)}"
    if objectId is not _UNCHECKED:
        if not isinstance(objectId, str) or not 0 < len(objectId) <= MAX_OBJECT_ID_CHARS:
            return f"objectId is {_shown(objectId)}, not a string of 1 to {MAX_OBJECT_ID_CHARS} characters"
        if not all("!" <= c <= "~" for c in objectId):
            return f"objectId {ascii(objectId)[:80]} is not printable ASCII without spaces"
    return None


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = ascii(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
