"""The archive's files as a static server would give them (folder listings, HTTP ranges), but only the caller's:
another programme's tarball, Parquet or index folder is a 404, and MD5SUMS and manifests leave its lines out."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.responses import StreamingResponse

from alertdist.archive.manifest import NightManifest
from alertdist.archive.tarball import MD5SUMS, md5sums_text, parse_md5sums
from alertdist.service import pages
from alertdist.service.routes.common import not_found, store_of, visible
from alertdist.service.store import ArchiveStore, NotFound

__all__ = ["router"]

router = APIRouter()

_TARBALL = re.compile(r"^(?P<survey>[A-Za-z0-9]+)_(?P<programme>[A-Za-z0-9]+)_(?P<night>\d{8})\.tar\.gz$")
_PROGRAMME_PATH = re.compile(r"^(parquet|index)/night=\d{8}/programid=(?P<programid>\d+)(/|$)")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 8 << 20


def _programme_of(request: Request, path: str) -> int | None:
    """The programme a file belongs to (None: a file of the whole archive; -1: a programme nobody may name)."""
    name = path.rsplit("/", 1)[-1]
    m = _TARBALL.match(name)
    if m and "/" not in path:
        by_name = {n: p for p, n in request.app.state.config.programmes.items()}
        for manifest in store_of(request).nights().values():
            by_name.update({a.name: p for p, a in manifest.programmes.items()})
        return by_name.get(m["programme"], -1)
    m = _PROGRAMME_PATH.match(path)
    return int(m["programid"]) if m else None


def _may_see(request: Request, path: str, allowed: set[int]) -> bool:
    programid = _programme_of(request, path)
    return programid is None or programid in allowed


def _filtered(request: Request, path: str, allowed: set[int]) -> bytes | None:
    """MD5SUMS and manifests as the caller may see them (other programmes' lines left out)."""
    store = store_of(request)
    if path == MD5SUMS:
        entries = parse_md5sums(store.dest.read_bytes(path).decode())
        return md5sums_text({n: m for n, m in entries.items() if _may_see(request, n, allowed)}).encode()
    if path.startswith("manifests/") and path.endswith(".json"):
        manifest = NightManifest.from_json(store.dest.read_bytes(path))
        manifest.programmes = {p: a for p, a in manifest.programmes.items() if p in allowed}
        return manifest.to_json()
    return None


def _listing(request: Request, path: str, allowed: set[int]) -> Response:
    folder = path.rstrip("/")
    try:
        entries = store_of(request).listdir(folder)
    except NotFound:
        return not_found()
    shown = [e for e in entries if _may_see(request, f"{folder}/{e[0]}".lstrip("/"), allowed)]
    return HTMLResponse(pages.listing_page(path, shown))


@router.get("/files/{path:path}", summary="The archive's files (HTTP ranges) and folder listings")
def files(path: str, request: Request):
    if ".." in path.split("/") or path.startswith("/") or "\\" in path:
        return not_found()
    allowed, store = visible(request), store_of(request)
    if not _may_see(request, path.rstrip("/"), allowed):
        return not_found()
    if path == "" or path.endswith("/"):
        return _listing(request, path, allowed)
    if not store.is_file(path):
        if store.dest.fs.isdir(store.dest.full_path(path)):
            return Response(status_code=301, headers={"Location": f"{request.url.path}/"})
        return not_found()
    whole = _filtered(request, path, allowed)
    if whole is not None:
        return Response(whole, media_type="application/json" if path.endswith(".json") else "text/plain")
    return _ranged(store, path, request.headers.get("range"))


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) that a ``Range: bytes=`` header asks of ``size`` bytes (the whole file without one); None when
    it cannot be served (416)."""
    if not header:
        return 0, size
    m = _RANGE.match(header.strip())
    if not m or (not m[1] and not m[2]):
        return None
    if m[1]:
        start, end = int(m[1]), (min(size, int(m[2]) + 1) if m[2] else size)
    else:
        start, end = max(0, size - int(m[2])), size
    return None if start >= size or start >= end else (start, end)


def _ranged(store: ArchiveStore, path: str, header: str | None) -> Response:
    size = store.size(path)
    wanted = _byte_range(header, size)
    if wanted is None:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = wanted
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if header:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"

    def body():
        position = start
        while position < end:
            chunk = store.read_range(path, position, min(end, position + _CHUNK))
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    status = 206 if header else 200
    return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")
