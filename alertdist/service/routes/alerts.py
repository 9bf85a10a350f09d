"""Alerts one at a time: the packet as distributed, as JSON, its cutouts, its page; and the cone and time search."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from alertdist.avro import codec
from alertdist.service import pages, render
from alertdist.service.routes.common import json_safe, not_found, store_of, visible
from alertdist.service.store import NotFound

__all__ = ["router"]

router = APIRouter()


def _packet(request: Request, candid: int):
    store = store_of(request)
    location = store.locate(candid, visible(request))
    return location, store.packet(location)


def _with_cutout_links(record: dict, root: str, candid: int) -> dict:
    """The record with each cutout's bytes replaced by links to its PNG and FITS (JSON carries no images)."""
    for kind, name in render.CUTOUTS.items():
        if isinstance(record.get(name), dict):
            record[name] = {
                "fileName": record[name].get("fileName"),
                "png": f"{root}alerts/{candid}/cutouts/{kind}.png",
                "fits": f"{root}alerts/{candid}/cutouts/{kind}.fits",
            }
    return record


@router.get(
    "/alerts/{candid}",
    summary="One alert packet, byte for byte as distributed (application/avro); ?format=json for JSON",
    responses={200: {"content": {"application/avro": {}}}},
)
def alert(candid: int, request: Request, format: str = Query("avro", pattern="^(avro|json)$")):
    try:
        location, packet = _packet(request, candid)
    except NotFound:
        return not_found()
    if format == "avro":
        return Response(packet, media_type="application/avro")
    record = _with_cutout_links(codec.decode(packet), str(request.base_url), candid)
    record["_archive"] = {"night": location.night, "programid": location.programid}
    return JSONResponse(json_safe(record))


@router.get("/alerts/{candid}/cutouts/{name}", summary="A cutout: {science|template|difference}.{png|fits}")
def cutout(candid: int, name: str, request: Request):
    kind, _, ext = name.partition(".")
    if kind not in render.CUTOUTS or ext not in ("png", "fits"):
        return not_found()
    try:
        _, packet = _packet(request, candid)
    except NotFound:
        return not_found()
    stamp = (codec.decode(packet, [render.CUTOUTS[kind]])[render.CUTOUTS[kind]] or {}).get("stampData")
    if not stamp:
        return not_found()
    if ext == "fits":
        return Response(
            render.cutout_fits(stamp),
            media_type="application/fits",
            headers={"Content-Disposition": f'inline; filename="{candid}_{kind}.fits"'},
        )
    return Response(render.cutout_png(stamp), media_type="image/png")


@router.get("/alerts/{candid}/page", response_class=HTMLResponse, summary="An alert's page (cutouts, light curve)")
def alert_html(candid: int, request: Request):
    try:
        location, packet = _packet(request, candid)
    except NotFound:
        return not_found()
    record = codec.decode(packet, ["schemavsn", "objectId", "candid", "candidate"])
    return HTMLResponse(pages.alert_page(str(request.base_url), candid, location.night, record))


@router.get("/alerts", summary="Cone and time search: alerts within radius (degrees) of ra, dec; jd in [since, until)")
def search(
    request: Request,
    ra: float = Query(..., ge=0, lt=360),
    dec: float = Query(..., ge=-90, le=90),
    radius: float = Query(..., gt=0, le=10),
    since: float | None = None,
    until: float | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
):
    table = store_of(request).cone(ra, dec, radius, since, until, visible(request))
    return json_safe(table.slice(0, limit).to_pylist())
