"""What every route needs: the archive, the caller's programmes, a 404 that looks like any other, JSON-safe values."""

from __future__ import annotations

import math

from fastapi import Request
from fastapi.responses import JSONResponse

from alertdist.service.rights import Caller
from alertdist.service.store import ArchiveStore

__all__ = ["json_safe", "not_found", "store_of", "visible"]

_NOT_FOUND = {"detail": "not found"}


def store_of(request: Request) -> ArchiveStore:
    return request.app.state.store


def visible(request: Request) -> set[int]:
    """The programmes the caller may read (set by the rights middleware before any route runs)."""
    caller: Caller = request.state.caller
    return set(caller.programmes)


def not_found() -> JSONResponse:
    """The one answer for "does not exist" and "not yours to see": the two must not be told apart."""
    return JSONResponse(_NOT_FOUND, status_code=404)


def json_safe(value):
    """``value`` with NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
