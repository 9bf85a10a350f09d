"""Operations (health, request metrics), the nights archived and the schemas shipped."""

from __future__ import annotations

import json
from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from alertdist import schemas
from alertdist.archive.manifest import NightManifest
from alertdist.service.routes.common import not_found, store_of, visible
from alertdist.service.store import NotFound

__all__ = ["router"]

router = APIRouter()


@router.get("/health", summary="Liveness and the nights served")
def health(request: Request):
    return {"status": "ok", "nights": len(store_of(request).nights())}


@router.get("/metrics", response_class=PlainTextResponse, summary="Request counts and times (Prometheus text)")
def metrics_text(request: Request):
    return request.app.state.metrics.text()


def _manifest_view(manifest: NightManifest, allowed: set[int]) -> dict:
    body = json.loads(manifest.to_json())
    body["programmes"] = {p: a for p, a in body["programmes"].items() if int(p) in allowed}
    return body


@router.get("/nights", summary="The nights archived, with counts per programme you may read")
def nights(request: Request):
    allowed = visible(request)
    found = []
    for night, manifest in store_of(request).nights().items():
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


@router.get("/nights/{night}", summary="One night: counts, schema versions and its manifest")
def night(night: str, request: Request):
    try:
        manifest = store_of(request).night(night)
    except NotFound:
        return not_found()
    view = _manifest_view(manifest, visible(request))
    if not view["programmes"]:
        return not_found()
    versions: Counter = Counter()
    for a in view["programmes"].values():
        versions.update(a["schema_versions"])
    return {
        "night": night,
        "alerts": sum(a["counts"]["written"] for a in view["programmes"].values()),
        "schema_versions": dict(sorted(versions.items())),
        "manifest": view,
    }


@router.get("/schemas/{version}", summary="A ZTF alert schema as shipped (Avro JSON)")
def schema(version: str):
    if version not in schemas.available_versions():
        return not_found()
    return Response(schemas.load_schema_text(version), media_type="application/json")
