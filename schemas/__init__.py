"""The ZTF alert schemas, one folder per version, exactly as ZTF embedded them in its packets.

`load_schema` is the only code that reads this folder, so an installed package works too
(files are found through importlib.resources).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

__all__ = ["LATEST_VERSION", "available_versions", "load_schema", "load_schema_text"]


def available_versions() -> list[str]:
    """Every schema version shipped, oldest first."""
    folders = [p.name for p in resources.files(__name__).iterdir() if p.is_dir() and (p / "alert.avsc").is_file()]
    return sorted(folders, key=lambda v: tuple(int(x) for x in v.split(".")))


#: The newest version shipped: the one simulated packets are written in, and the superset of every field.
LATEST_VERSION = available_versions()[-1]


@cache
def load_schema_text(version: str = LATEST_VERSION) -> str:
    """The schema's JSON text as ZTF wrote it into each packet header (byte-exact)."""
    path = resources.files(__name__) / version / "alert.avsc"
    if not path.is_file():
        raise ValueError(f"unknown ZTF alert schema version {version!r}; known: {', '.join(available_versions())}")
    return path.read_text(encoding="utf-8")


def load_schema(version: str = LATEST_VERSION) -> dict:
    """The schema of one version as a JSON dict (a fresh copy each call, safe to modify)."""
    return json.loads(load_schema_text(version))
