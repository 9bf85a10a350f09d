"""The HTTP service's app (FastAPI): who is calling, their rate limit, the access log, and the routes (`routes`):
alerts, objects, cutouts, light curves, searches, nights, schemas and the files.

Every data route asks `visible` which programmes the caller may read and looks only there, so an alert, object
or file the caller may not see is answered exactly like one that does not exist (404, same body). The caller
comes from ``Authorization: Bearer <token>``; an unknown or revoked token is refused (401) whatever it asks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from alertdist.archive.index import IndexError_
from alertdist.service.rights import Caller, RateLimiter, TokenStore
from alertdist.service.routes import ROUTERS
from alertdist.service.store import ArchiveStore

__all__ = ["ServiceConfig", "create_app"]

ACCESS_LOG = logging.getLogger("alertdist.service.access")


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


def _rights_and_logs(tokens: TokenStore, limiter: RateLimiter, metrics: _Metrics):
    """The middleware every request passes: who is calling (401 for a bad token), the caller's rate limit (429),
    then the route; each request counted, timed and logged (never with its token)."""

    async def rights_and_logs(request: Request, call_next):
        started = time.perf_counter()
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        caller = tokens.caller(token)
        response = await _answer(request, call_next, caller, limiter, token)
        elapsed = time.perf_counter() - started
        name = getattr(request.scope.get("route"), "path", "other")
        metrics.requests[(name, response.status_code)] += 1
        metrics.seconds[name] += elapsed
        ACCESS_LOG.info(
            '%s %s "%s %s" %d %.1fms',
            request.client.host if request.client else "-",
            caller.name if caller else "invalid-token",
            request.method,
            request.url.path,
            response.status_code,
            elapsed * 1e3,
        )
        return response

    return rights_and_logs


async def _answer(request: Request, call_next, caller: Caller | None, limiter: RateLimiter, token: str | None):
    if caller is None:
        return JSONResponse(
            {"detail": "unknown or revoked token: ask the operator for a valid one, or send none for public data"},
            status_code=401,
        )
    wait = limiter.take(caller, caller.name if token else f"ip:{request.client.host if request.client else ''}")
    if wait > 0:
        return JSONResponse(
            {"detail": f"rate limit of tier {caller.tier!r} reached: retry after {math.ceil(wait)} s"},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.caller = caller
    return await call_next(request)


async def _index_problem(request: Request, error: IndexError_):
    return JSONResponse({"detail": f"the archive's index is inconsistent: {error}"}, status_code=500)


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
    app.state.config = config
    app.state.metrics = metrics
    app.middleware("http")(_rights_and_logs(tokens, limiter, metrics))
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(IndexError_, _index_problem)
    return app
