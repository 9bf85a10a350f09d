"""What a night is: the date that names it, parsed once at the edge, and the one rule for "tonight".

A night is named by a date. At Palomar (ZTF) it is the UTC date, which holds through the whole night; a Chilean
site names its nights by the local date at their start (noon to noon). Everything below takes a `datetime.date`;
text becomes a night only through `parse_night` (strict ``YYYYMMDD`` or ``YYYY-MM-DD``), and a flow parameter
typed `Night` goes through the same function.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "NIGHT_LABEL_LOCAL_START",
    "NIGHT_LABEL_UTC",
    "SITES",
    "Night",
    "Site",
    "jd_of",
    "jd_to_unix",
    "night_date",
    "night_of_jd",
    "parse_night",
    "parse_nights",
    "site_for_timezone",
    "tonight",
    "unix_of_jd",
]

NIGHT_LABEL_UTC = "utc"
NIGHT_LABEL_LOCAL_START = "local-start"
JD_UNIX_EPOCH = 2440587.5  # the Julian Date of 1970-01-01T00:00:00 UTC
_NIGHT_FORMS = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
EXPECTED_FORM = "YYYYMMDD (or YYYY-MM-DD), e.g. 20231012"


@dataclass(frozen=True)
class Site:
    """An observatory: its time zone and how its nights are labelled.

    ``utc``: the night is named by its UTC date, ZTF's convention. At Palomar (UTC-7/-8) a whole night, from
    evening twilight (after 00:30 UTC) to dawn (before 14:00 UTC), lies inside one UTC day, and that UTC date
    is also the local calendar date at which the night's observing starts counting (the topic exists "before
    the first exposure" of that date).
    ``local-start``: the night is named by the local calendar date at its start (the date of local noon before
    it), Rubin's ``dayobs`` style. Chilean nights cross UTC midnight, so the UTC date would split them in two.
    """

    name: str
    timezone: str
    night_label: str = NIGHT_LABEL_UTC

    def __post_init__(self) -> None:
        if self.night_label not in (NIGHT_LABEL_UTC, NIGHT_LABEL_LOCAL_START):
            raise ValueError(f"night_label must be {NIGHT_LABEL_UTC!r} or {NIGHT_LABEL_LOCAL_START!r}")
        ZoneInfo(self.timezone)  # fails early on a typo


SITES = {
    "palomar": Site("palomar", "America/Los_Angeles", NIGHT_LABEL_UTC),
    "cerro-pachon": Site("cerro-pachon", "America/Santiago", NIGHT_LABEL_LOCAL_START),
}


def parse_night(text: str | dt.date) -> dt.date:
    """The night ``text`` names: exactly ``YYYYMMDD`` or ``YYYY-MM-DD`` (a date is returned as is).

    Strict on purpose: `strptime` reads ``2023101`` as 2023-10-01, so a dropped digit would publish or archive
    under the wrong night.
    """
    if isinstance(text, dt.date) and not isinstance(text, dt.datetime):
        return text
    match = _NIGHT_FORMS.fullmatch(str(text).strip())
    if match is None or ("-" in match.group(0) and match.group(0).count("-") != 2):
        raise ValueError(f"night {text!r} is not a night date: expected {EXPECTED_FORM}")
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError as e:
        raise ValueError(f"night {text!r} is not a calendar date ({e}): expected {EXPECTED_FORM}") from e


def parse_nights(specs: Iterable[str | dt.date]) -> list[dt.date]:
    """The nights that ``specs`` name, sorted, each once: nights, ``FIRST..LAST`` ranges (inclusive) and
    comma-separated lists of either, e.g. ``["20231010..20231012", "20231101,20231103"]``."""
    nights: set[dt.date] = set()
    for spec in specs:
        for part in [spec] if isinstance(spec, dt.date) else str(spec).split(","):
            if isinstance(part, str) and ".." in part:
                first, _, last = part.partition("..")
                first, last = parse_night(first), parse_night(last)
                if last < first:
                    raise ValueError(f"night range {part!r} ends before it starts")
                nights.update(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
            elif part != "":
                nights.add(parse_night(part))
    if not nights:
        raise ValueError(f"no night given: expected {EXPECTED_FORM}, a range FIRST..LAST, or a list of them")
    return sorted(nights)


def format_night(night: dt.date) -> str:
    """The night's label, ``YYYYMMDD``: in topic names, archive paths, manifests and messages (the one place)."""
    if not isinstance(night, dt.date):
        raise TypeError(f"a night is a date, not {type(night).__name__} {night!r}: parse text with parse_night first")
    return f"{night:%Y%m%d}"


#: A night as a typed parameter (a Prefect flow's, a settings field): parsed by `parse_night`, shown as YYYYMMDD.
Night = Annotated[dt.date, BeforeValidator(parse_night), PlainSerializer(format_night, return_type=str)]


def night_date(moment: dt.datetime, site: Site) -> dt.date:
    """The date that names the night containing ``moment`` (an aware datetime) at ``site``."""
    if moment.tzinfo is None:
        raise ValueError("night_date needs an aware datetime (with tzinfo); got a naive one")
    if site.night_label == NIGHT_LABEL_UTC:
        return moment.astimezone(dt.UTC).date()
    local = moment.astimezone(ZoneInfo(site.timezone))
    return (local - dt.timedelta(hours=12)).date()  # noon to noon: the date at the evening's start


def site_for_timezone(timezone: str) -> Site:
    """The known site with this time zone (Palomar for America/Los_Angeles), else a UTC-labelled custom site."""
    for site in SITES.values():
        if site.timezone == timezone:
            return site
    return Site("custom", timezone)


def tonight(site: Site, now: dt.datetime | None = None) -> dt.date:
    """The night to work on at ``now``: the one that starts this evening, or is under way.

    Not simply ``night_date(now)``: at dusk in summer Palomar is still on the previous UTC date (16:30 PDT is
    23:30 UTC), while the night about to start is named by the next one. So the rule is applied to the local
    midnight inside the current noon-to-noon day, which every site's night contains.
    """
    zone = ZoneInfo(site.timezone)
    local = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    day = (local - dt.timedelta(hours=12)).date()  # the local date of the evening the night starts on
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=zone)
    return night_date(midnight, site)


def unix_of_jd(jd: float) -> float:
    """Seconds since 1970 (UTC) of a Julian Date."""
    return (jd - JD_UNIX_EPOCH) * 86400.0


def jd_to_unix(jd: float) -> int:
    """Whole seconds since 1970 of a Julian date (the tar member mtime of an alert observed at ``jd``)."""
    return round(unix_of_jd(jd))


def jd_of(moment: dt.datetime) -> float:
    """The Julian Date of an aware datetime."""
    return JD_UNIX_EPOCH + moment.timestamp() / 86400.0


def night_of_jd(jd: float, site: Site) -> dt.date:
    """The night (per `night_date` at ``site``) an observation at Julian Date ``jd`` belongs to.

    Raises ValueError for a jd that has no calendar date (NaN, infinite, beyond year 1-9999), never the
    OverflowError or OSError a timestamp conversion would: callers reject the packet on ValueError.
    """
    try:
        moment = dt.datetime.fromtimestamp(unix_of_jd(jd), tz=dt.UTC)
    except (ValueError, OverflowError, OSError, TypeError) as e:
        raise ValueError(f"jd {jd!r} is not a date ({type(e).__name__}: {e})") from e
    return night_date(moment, site)
