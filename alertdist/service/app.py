"""The HTTP routes (FastAPI): alerts, objects, cutouts, light curves, searches, nights, schemas and the files.

Every data route asks `visible` which programmes the caller may read and looks only there, so an alert, object
or file the caller may not see is answered exactly like one that does not exist (404, same body). The caller
comes from ``Authorization: Bearer <token>``; an unknown or revoked token is refused (401) whatever it asks.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from alertdist import schemas
from alertdist.archive.index import IndexError_
from alertdist.archive.manifest import NightManifest
from alertdist.archive.tarball import MD5SUMS, md5sums_text, parse_md5sums
from alertdist.avro import codec
from alertdist.service import pages, render
from alertdist.service.rights import Caller, RateLimiter, TokenStore
from alertdist.service.store import ArchiveStore, NotFound

__all__ = ["ServiceConfig", "create_app"]

ACCESS_LOG = logging.getLogger("alertdist.service.access")
_TARBALL = re.compile(r"^(?P<survey>[A-Za-z0-9]+)_(?P<programme>[A-Za-z0-9]+)_(?P<night>\d{8})\.tar\.gz$")
_PROGRAMME_PATH = re.compile(r"^(parquet|index)/night=\d{8}/programid=(?P<programid>\d+)(/|$)")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20
_NOT_FOUND = {"detail": "not found"}


@dataclass(frozen=True)
class ServiceConfig:
    """What the service serves and how; picklable, so each worker process builds its app from it."""

    archive_url: str
    tokens_path: str
    storage_options: dict = field(default_factory=dict)
    survey: str | None = None
    programmes: dict = field(default_factory=lambda: {1: "public", 2: "partnership", 3: "caltech"})
    rate_tiers: dict | None = None


class _Metrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.seconds: Counter = Counter()

    def text(self) -> str:
        lines = ["# TYPE alertdist_http_requests_total counter"]
        lines += [
            f'alertdist_http_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in self.requests.items()
        ]
        lines.append("# TYPE alertdist_http_request_seconds_total counter")
        lines += [f'alertdist_http_request_seconds_total{{route="{r}"}} {v:.6f}' for r, v in self.seconds.items()]
        return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _not_found() -> JSONResponse:
    return JSONResponse(_NOT_FOUND, status_code=404)


def create_app(config: ServiceConfig) -> FastAPI:
    """The service's app over ``config.archive_url``."""
    store = ArchiveStore(config.archive_url, config.storage_options, survey=config.survey)
    tokens = TokenStore(Path(config.tokens_path))
    limiter = RateLimiter(config.rate_tiers) if config.rate_tiers else RateLimiter()
    metrics = _Metrics()
    app = FastAPI(
        title="alertdist archive service",
        version="1",
        description=(
            "Read-only access to the alert archive: packets byte for byte as distributed, objects, cutouts, light "
            "curves, cone and time searches, nights and their files. Programme 1 is public; programmes 2 and 3 need "
            "a token (`Authorization: Bearer <token>`) whose role allows them. Anything not visible to the caller "
            "answers 404, like something that does not exist."
        ),
    )
    app.state.store = store

    @app.middleware("http")
    async def rights_and_logs(request: Request, call_next):
        started = time.perf_counter()
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        caller = tokens.caller(token)
        if caller is None:
            response = JSONResponse(
                {"detail": "unknown or revoked token: ask the operator for a valid one, or send none for public data"},
                status_code=401,
            )
        else:
            wait = limiter.take(caller, caller.name if token else f"ip:{request.client.host if request.client else ''}")
            if wait > 0:
                response = JSONResponse(
                    {"detail": f"rate limit of tier {caller.tier!r} reached: retry after {math.ceil(wait)} s"},
                    status_code=429,
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            else:
                request.state.caller = caller
                response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        metrics.requests[(name, response.status_code)] += 1
        metrics.seconds[name] += elapsed
        who = caller.name if caller else "invalid-token"
        client = request.client.host if request.client else "-"
        ACCESS_LOG.info(
            '%s %s "%s %s" %d %.1fms',
            client,
            who,
            request.method,
            request.url.path,
            response.status_code,
            elapsed * 1e3,
        )
        return response

    def visible(request: Request) -> set[int]:
        caller: Caller = request.state.caller
        return set(caller.programmes)

    def locate(request: Request, candid: int):
        return store.locate(candid, visible(request))

    # ------------------------------------------------------------------------------------------ operations

    @app.get("/health", summary="Liveness and the nights served")
    def health():
        return {"status": "ok", "nights": len(store.nights())}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Request counts and times (Prometheus text)")
    def metrics_text():
        return metrics.text()

    # ------------------------------------------------------------------------------------------- nights

    def _manifest_view(manifest: NightManifest, allowed: set[int]) -> dict:
        body = json.loads(manifest.to_json())
        body["programmes"] = {p: a for p, a in body["programmes"].items() if int(p) in allowed}
        return body

    @app.get("/nights", summary="The nights archived, with counts per programme you may read")
    def nights(request: Request):
        allowed = visible(request)
        found = []
        for night, manifest in store.nights().items():
            programmes = {p: a for p, a in manifest.programmes.items() if p in allowed}
            if programmes:
                found.append(
                    {
                        "night": night,
                        "alerts": sum(a.counts["written"] for a in programmes.values()),
                        "programmes": {str(p): a.counts["written"] for p, a in sorted(programmes.items())},
                    }
                )
        return found

    @app.get("/nights/{night}", summary="One night: counts, schema versions and its manifest")
    def night(night: str, request: Request):
        allowed = visible(request)
        try:
            manifest = store.night(night)
        except NotFound:
            return _not_found()
        view = _manifest_view(manifest, allowed)
        if not view["programmes"]:
            return _not_found()
        versions: Counter = Counter()
        for a in view["programmes"].values():
            versions.update(a["schema_versions"])
        return {
            "night": night,
            "alerts": sum(a["counts"]["written"] for a in view["programmes"].values()),
            "schema_versions": dict(sorted(versions.items())),
            "manifest": view,
        }

    @app.get("/schemas/{version}", summary="A ZTF alert schema as shipped (Avro JSON)")
    def schema(version: str):
        if version not in schemas.available_versions():
            return _not_found()
        return Response(schemas.load_schema_text(version), media_type="application/json")

    # ------------------------------------------------------------------------------------------- alerts

    def _packet(request: Request, candid: int):
        location = locate(request, candid)
        return location, store.packet(location)

    @app.get(
        "/alerts/{candid}",
        summary="One alert packet, byte for byte as distributed (application/avro); ?format=json for JSON",
        responses={200: {"content": {"application/avro": {}}}},
    )
    def alert(candid: int, request: Request, format: str = Query("avro", pattern="^(avro|json)$")):
        try:
            location, packet = _packet(request, candid)
        except NotFound:
            return _not_found()
        if format == "avro":
            return Response(packet, media_type="application/avro")
        record = codec.decode(packet)
        root = str(request.base_url)
        for kind, name in render.CUTOUTS.items():
            if isinstance(record.get(name), dict):
                record[name] = {
                    "fileName": record[name].get("fileName"),
                    "png": f"{root}alerts/{candid}/cutouts/{kind}.png",
                    "fits": f"{root}alerts/{candid}/cutouts/{kind}.fits",
                }
        record["_archive"] = {"night": location.night, "programid": location.programid}
        return JSONResponse(_json_safe(record))

    @app.get("/alerts/{candid}/cutouts/{name}", summary="A cutout: {science|template|difference}.{png|fits}")
    def cutout(candid: int, name: str, request: Request):
        kind, _, ext = name.partition(".")
        if kind not in render.CUTOUTS or ext not in ("png", "fits"):
            return _not_found()
        try:
            _, packet = _packet(request, candid)
        except NotFound:
            return _not_found()
        stamp = (codec.decode(packet, [render.CUTOUTS[kind]])[render.CUTOUTS[kind]] or {}).get("stampData")
        if not stamp:
            return _not_found()
        if ext == "fits":
            return Response(
                render.cutout_fits(stamp),
                media_type="application/fits",
                headers={"Content-Disposition": f'inline; filename="{candid}_{kind}.fits"'},
            )
        return Response(render.cutout_png(stamp), media_type="image/png")

    @app.get("/alerts/{candid}/page", response_class=HTMLResponse, summary="An alert's page (cutouts, light curve)")
    def alert_html(candid: int, request: Request):
        try:
            location, packet = _packet(request, candid)
        except NotFound:
            return _not_found()
        record = codec.decode(packet, ["schemavsn", "objectId", "candid", "candidate"])
        return HTMLResponse(pages.alert_page(str(request.base_url), candid, location.night, record))

    @app.get("/alerts", summary="Cone and time search: alerts within radius (degrees) of ra, dec; jd in [since, until)")
    def search(
        request: Request,
        ra: float = Query(..., ge=0, lt=360),
        dec: float = Query(..., ge=-90, le=90),
        radius: float = Query(..., gt=0, le=10),
        since: float | None = None,
        until: float | None = None,
        limit: int = Query(1000, ge=1, le=100_000),
    ):
        table = store.cone(ra, dec, radius, since, until, visible(request))
        return _json_safe(table.slice(0, limit).to_pylist())

    # ------------------------------------------------------------------------------------------ objects

    @app.get("/objects/{object_id}", summary="Every archived alert of an object; ?format=json|arrow|parquet")
    def obj(object_id: str, request: Request, format: str = Query("json", pattern="^(json|arrow|parquet)$")):
        try:
            table = store.object_alerts(object_id, visible(request))
        except NotFound:
            return _not_found()
        if format == "json":
            return _json_safe(table.to_pylist())
        out = io.BytesIO()
        if format == "parquet":
            pq.write_table(table, out)
            return Response(out.getvalue(), media_type="application/vnd.apache.parquet")
        with pa.ipc.new_stream(out, table.schema) as writer:
            writer.write_table(table)
        return Response(out.getvalue(), media_type="application/vnd.apache.arrow.stream")

    def _history(request: Request, object_id: str) -> tuple[list[dict], list[dict]]:
        allowed = visible(request)
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

    @app.get("/objects/{object_id}/lightcurve.png", summary="An object's light curve by band, with upper limits")
    def lightcurve(object_id: str, request: Request):
        try:
            detections, limits = _history(request, object_id)
        except NotFound:
            return _not_found()
        return Response(render.lightcurve_png(object_id, detections, limits), media_type="image/png")

    @app.get("/objects/{object_id}/page", response_class=HTMLResponse, summary="An object's page")
    def object_html(object_id: str, request: Request):
        try:
            rows = store.object_alerts(object_id, visible(request)).to_pylist()
        except NotFound:
            return _not_found()
        return HTMLResponse(pages.object_page(str(request.base_url), object_id, rows))

    # -------------------------------------------------------------------------------------------- files

    def _programme_of(path: str) -> int | None:
        """The programme a file belongs to (None: a file of the whole archive)."""
        name = path.rsplit("/", 1)[-1]
        m = _TARBALL.match(name)
        if m and "/" not in path:
            by_name = {n: p for p, n in config.programmes.items()}
            for manifest in store.nights().values():
                by_name.update({a.name: p for p, a in manifest.programmes.items()})
            return by_name.get(m["programme"], -1)
        m = _PROGRAMME_PATH.match(path)
        return int(m["programid"]) if m else None

    def _may_see(path: str, allowed: set[int]) -> bool:
        programid = _programme_of(path)
        return programid is None or programid in allowed

    def _filtered(path: str, allowed: set[int]) -> bytes | None:
        """MD5SUMS and manifests as the caller may see them (other programmes' lines left out)."""
        if path == MD5SUMS:
            entries = parse_md5sums(store.dest.read_bytes(path).decode())
            return md5sums_text({n: m for n, m in entries.items() if _may_see(n, allowed)}).encode()
        if path.startswith("manifests/") and path.endswith(".json"):
            manifest = NightManifest.from_json(store.dest.read_bytes(path))
            manifest.programmes = {p: a for p, a in manifest.programmes.items() if p in allowed}
            return manifest.to_json()
        return None

    @app.get("/files/{path:path}", summary="The archive's files (HTTP ranges) and folder listings")
    def files(path: str, request: Request):
        if ".." in path.split("/") or path.startswith("/") or "\\" in path:
            return _not_found()
        allowed = visible(request)
        if not _may_see(path.rstrip("/"), allowed):
            return _not_found()
        if path == "" or path.endswith("/"):
            folder = path.rstrip("/")
            try:
                entries = store.listdir(folder)
            except NotFound:
                return _not_found()
            shown = [e for e in entries if _may_see(f"{folder}/{e[0]}".lstrip("/"), allowed)]
            return HTMLResponse(pages.listing_page(path, shown))
        if not store.is_file(path):
            if store.dest.fs.isdir(store.dest.full_path(path)):
                return Response(status_code=301, headers={"Location": f"{request.url.path}/"})
            return _not_found()
        whole = _filtered(path, allowed)
        if whole is not None:
            return Response(whole, media_type="application/json" if path.endswith(".json") else "text/plain")
        return _ranged(path, request.headers.get("range"))

    def _ranged(path: str, header: str | None) -> Response:
        size = store.size(path)
        start, end = 0, size
        status = 200
        if header:
            m = _RANGE.match(header.strip())
            if not m or (not m[1] and not m[2]):
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            if m[1]:
                start = int(m[1])
                end = min(size, int(m[2]) + 1) if m[2] else size
            else:
                start = max(0, size - int(m[2]))
            if start >= size or start >= end:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        from starlette.responses import StreamingResponse

        def body():
            position = start
            while position < end:
                chunk = store.read_range(path, position, min(end, position + 8 * _CHUNK))
                if not chunk:
                    return
                position += len(chunk)
                yield chunk

        return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")

    @app.exception_handler(IndexError_)
    async def index_problem(request: Request, error: IndexError_):
        return JSONResponse({"detail": f"the archive's index is inconsistent: {error}"}, status_code=500)

    return app
