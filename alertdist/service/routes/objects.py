"""Objects: every archived alert of one (JSON, Arrow, Parquet), its light curve with upper limits, its page."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from alertdist.avro import codec
from alertdist.service import pages, render
from alertdist.service.routes.common import json_safe, not_found, store_of, visible
from alertdist.service.store import NotFound

__all__ = ["router"]

router = APIRouter()


@router.get("/objects/{object_id}", summary="Every archived alert of an object; ?format=json|arrow|parquet")
def obj(object_id: str, request: Request, format: str = Query("json", pattern="^(json|arrow|parquet)$")):
    try:
        table = store_of(request).object_alerts(object_id, visible(request))
    except NotFound:
        return not_found()
    if format == "json":
        return json_safe(table.to_pylist())
    out = io.BytesIO()
    if format == "parquet":
        pq.write_table(table, out)
        return Response(out.getvalue(), media_type="application/vnd.apache.parquet")
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return Response(out.getvalue(), media_type="application/vnd.apache.arrow.stream")


def _history(request: Request, object_id: str) -> tuple[list[dict], list[dict]]:
    """Detections (archived alerts and their history) and upper limits, of the programmes the caller may read."""
    store, allowed = store_of(request), visible(request)
    rows = store.object_alerts(object_id, allowed).to_pylist()
    detections = {r["candid"]: r for r in rows}
    limits = []
    latest = max(rows, key=lambda r: r["jd"])
    packet = store.packet(store.locate(int(latest["candid"]), allowed))
    for past in codec.decode(packet, ["prv_candidates"])["prv_candidates"] or []:
        if past.get("programid") not in allowed:
            continue  # another programme's history stays hidden
        if past.get("magpsf") is None:
            limits.append(past)
        elif past.get("candid") not in detections:
            detections[past.get("candid")] = past
    return sorted(detections.values(), key=lambda r: r["jd"]), limits


@router.get("/objects/{object_id}/lightcurve.png", summary="An object's light curve by band, with upper limits")
def lightcurve(object_id: str, request: Request):
    try:
        detections, limits = _history(request, object_id)
    except NotFound:
        return not_found()
    return Response(render.lightcurve_png(object_id, detections, limits), media_type="image/png")


@router.get("/objects/{object_id}/page", response_class=HTMLResponse, summary="An object's page")
def object_html(object_id: str, request: Request):
    try:
        rows = store_of(request).object_alerts(object_id, visible(request)).to_pylist()
    except NotFound:
        return not_found()
    return HTMLResponse(pages.object_page(str(request.base_url), object_id, rows))
