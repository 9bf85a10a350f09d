"""Whether each night is open, and its dawn, as metrics: what the publisher-stalled and not-closed-by-dawn rules
compare against. Read from the nights topic (`alertdist.nights.state`), not from the publisher, so a dead
publisher is seen too."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from alertdist.kafka.state_topic import KeyedStateTopic
from alertdist.metrics.registry import Gauge
from alertdist.nights.dates import Site, format_night, night_date, parse_night
from alertdist.nights.topics import TopicNaming

__all__ = ["DAWN_LOCAL", "dawn_of", "export_nights"]

NIGHT_OPEN = Gauge("alertdist_night_open", "1 while a night is open (published into), 0 once closed.", ["night"])
NIGHT_DAWN = Gauge(
    "alertdist_night_dawn_timestamp_seconds", "When the night's morning comes at the site (local 07:00).", ["night"]
)
#: The local time by which a night should be closed.
DAWN_LOCAL = dt.time(7, 0)
#: Nights older than this are not exported (their series would only grow the scrape).
KEEP_DAYS = 3


def dawn_of(night: dt.date, site: Site) -> dt.datetime:
    """The morning (local `DAWN_LOCAL`) that ends ``night`` at ``site``: the first such morning whose preceding
    local midnight belongs to the night."""
    zone = ZoneInfo(site.timezone)
    for offset in (0, 1, 2):
        day = night + dt.timedelta(days=offset - 1)
        midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=zone)
        if night_date(midnight, site) == night:
            return dt.datetime.combine(midnight.date(), DAWN_LOCAL, tzinfo=zone)
    raise ValueError(f"night {format_night(night)} has no local midnight at {site.name}")


def export_nights(bootstrap_servers: str, naming: TopicNaming, site: Site, *, now: dt.datetime | None = None) -> dict:
    """Read every night's state and set the gauges (recent nights only); returns {night: state}."""
    states = KeyedStateTopic(bootstrap_servers, naming.nights_topic).latest(timeout=10)
    today = (now or dt.datetime.now(dt.UTC)).date()
    opened, dawns = {}, {}
    for night, body in states.items():
        try:
            date = parse_night(night)
        except ValueError:
            continue
        if (today - date).days > KEEP_DAYS:
            continue
        opened[(night,)] = 1.0 if body.get("state") == "open" else 0.0
        dawns[(night,)] = dawn_of(date, site).timestamp()
    NIGHT_OPEN.replace_all(opened)
    NIGHT_DAWN.replace_all(dawns)
    return {night: body.get("state") for night, body in states.items()}
