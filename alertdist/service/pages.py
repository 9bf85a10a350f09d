"""Small HTML pages: one per alert and per object (cutouts, light curve, main fields) and folder listings.

Every value shown is escaped (packets come from outside); links are relative to the service root.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

__all__ = ["alert_page", "listing_page", "object_page"]

_STYLE = """<style>
body{font-family:sans-serif;margin:1.5em;max-width:70em}
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}
.cutouts img{width:252px;height:252px;margin-right:8px;image-rendering:pixelated;border:1px solid #888}
figure{display:inline-block;margin:0 8px 8px 0}figcaption{text-align:center}
</style>"""

MAIN_FIELDS = (
    "objectId",
    "candid",
    "jd",
    "ra",
    "dec",
    "fid",
    "magpsf",
    "sigmapsf",
    "programid",
    "rb",
    "drb",
    "isdiffpos",
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{_STYLE}</head>"
        f"<body>{body}</body></html>"
    )


def _rows(values: dict) -> str:
    return "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in values.items())


def alert_page(root: str, candid: int, night: str, record: dict) -> str:
    """An alert: its three cutouts, its object's light curve, the candidate's main fields."""
    candidate = record.get("candidate") or {}
    object_id = str(record.get("objectId", ""))
    fields = {"objectId": object_id, "night": night, "schemavsn": record.get("schemavsn")}
    fields.update({k: candidate[k] for k in MAIN_FIELDS if k in candidate and k not in fields})
    cutouts = "".join(
        f"<figure><img alt='{kind} cutout' src='{root}alerts/{candid}/cutouts/{kind}.png'>"
        f"<figcaption>{kind} (<a href='{root}alerts/{candid}/cutouts/{kind}.fits'>FITS</a>)</figcaption></figure>"
        for kind in ("science", "template", "difference")
    )
    obj = quote(object_id, safe="")
    body = (
        f"<h1>Alert {candid}</h1>"
        f"<p>Object <a href='{root}objects/{obj}/page'>{escape(object_id)}</a> · "
        f"<a href='{root}alerts/{candid}'>packet (Avro)</a> · <a href='{root}alerts/{candid}?format=json'>JSON</a></p>"
        f"<div class='cutouts'>{cutouts}</div>"
        f"<h2>Light curve</h2><img alt='light curve' src='{root}objects/{obj}/lightcurve.png'>"
        f"<h2>Candidate</h2><table>{_rows(fields)}</table>"
    )
    return _page(f"Alert {candid}", body)


def object_page(root: str, object_id: str, alerts: list[dict]) -> str:
    """An object: its light curve and a row per archived alert (links to each alert's page)."""
    obj = quote(object_id, safe="")
    head = "".join(f"<th>{c}</th>" for c in ("candid", "night", "programid", "jd", "fid", "magpsf", "sigmapsf"))
    rows = "".join(
        f"<tr><td><a href='{root}alerts/{int(a['candid'])}/page'>{int(a['candid'])}</a></td>"
        + "".join(
            f"<td>{escape(str(a.get(c)))}</td>" for c in ("night", "programid", "jd", "fid", "magpsf", "sigmapsf")
        )
        + "</tr>"
        for a in alerts
    )
    body = (
        f"<h1>Object {escape(object_id)}</h1>"
        f"<p><a href='{root}objects/{obj}'>JSON</a> · <a href='{root}objects/{obj}?format=parquet'>Parquet</a></p>"
        f"<img alt='light curve' src='{root}objects/{obj}/lightcurve.png'>"
        f"<h2>{len(alerts)} archived alert(s)</h2><table><tr>{head}</tr>{rows}</table>"
    )
    return _page(f"Object {object_id}", body)


def listing_page(path: str, entries: list[tuple[str, bool, int | None]]) -> str:
    """A folder listing like a web server's index page: one link per entry, folders ending in ``/``."""
    title = f"Index of /{path}"
    links = ["<a href='../'>Parent Directory</a>"] if path else []
    for name, folder, size in entries:
        href = quote(name) + ("/" if folder else "")
        shown = escape(name) + ("/" if folder else "")
        links.append(f"<a href='{href}'>{shown}</a> {'' if folder or size is None else size}")
    return _page(title, f"<h1>{escape(title)}</h1><pre>" + "\n".join(links) + "</pre>")
