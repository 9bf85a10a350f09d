"""The archive as the service reads it: nights from their manifests, alerts through each night's index.

Everything here is read on demand and cached by the manifest's checksum, so a night archived (or re-archived)
while the service runs is seen at the next listing, and nothing is ever written. Bytes come from the store with
range reads (`read_range`), counted in `bytes_read` so the benchmark can show a lookup reads ~50 KB, not a file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

import pyarrow as pa

from alertdist.archive.index import NightIndex, cone_cells, read_packet
from alertdist.archive.manifest import NightManifest
from alertdist.archive.storage import Destination

__all__ = ["AlertLocation", "ArchiveStore", "NotFound"]

_MANIFEST = re.compile(r"^(?P<survey>[A-Za-z0-9]+)_(?P<night>\d{8})\.json$")
_NIGHTS_TTL = 10.0  # seconds a listing of the manifests is trusted


class NotFound(LookupError):
    """Nothing there (or nothing the caller may see: the two are answered alike)."""


@dataclass(frozen=True)
class AlertLocation:
    night: str
    programid: int
    row: dict
    tarball: str


class ArchiveStore:
    """Read access to one archive root (a folder or an fsspec URL) for the service."""

    def __init__(self, url: str, storage_options: dict | None = None, *, survey: str | None = None) -> None:
        self.dest = Destination(url, storage_options)
        self.survey = survey
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._manifests: dict[str, tuple[str, NightManifest]] = {}  # night -> (sha256, manifest)
        self._indexes: dict[tuple[str, int, str], NightIndex] = {}
        self._listed_at = -1e9

    # ------------------------------------------------------------------------------------------- files

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an archive file (a ranged GET on S3)."""
        data = self.dest.fs.cat_file(self.dest.full_path(path), start=start, end=end)
        with self._lock:
            self.bytes_read += len(data)
        return data

    def size(self, path: str) -> int:
        return int(self.dest.fs.size(self.dest.full_path(path)))

    def is_file(self, path: str) -> bool:
        return self.dest.fs.isfile(self.dest.full_path(path))

    def listdir(self, path: str) -> list[tuple[str, bool, int | None]]:
        """(name, is folder, size) of a folder's entries; raises NotFound."""
        full = self.dest.full_path(path) if path else self.dest.root
        try:
            entries = self.dest.fs.ls(full, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(path) from None
        found = []
        for e in entries:
            name = e["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") or name == "":
                continue  # temporaries of an atomic write, hidden files
            found.append((name, e["type"] == "directory", e.get("size")))
        return sorted(found)

    # ------------------------------------------------------------------------------------------ nights

    def nights(self) -> dict[str, NightManifest]:
        """Every night with a manifest, oldest first (re-listed every few seconds)."""
        import time

        now = time.monotonic()
        if now - self._listed_at > _NIGHTS_TTL:
            try:
                names = [n for n, folder, _ in self.listdir("manifests") if not folder]
            except NotFound:
                names = []
            seen = {}
            for name in names:
                m = _MANIFEST.match(name)
                if not m or (self.survey and m["survey"] != self.survey):
                    continue
                raw = self.dest.read_bytes(f"manifests/{name}")
                digest = hashlib.sha256(raw).hexdigest()
                known = self._manifests.get(m["night"])
                seen[m["night"]] = known if known and known[0] == digest else (digest, NightManifest.from_json(raw))
            with self._lock:
                self._manifests = seen
                self._listed_at = now
        return {night: manifest for night, (_, manifest) in sorted(self._manifests.items())}

    def night(self, night: str) -> NightManifest:
        manifest = self.nights().get(night)
        if manifest is None:
            raise NotFound(night)
        return manifest

    def indexes(self, programmes: set[int] | None = None) -> list[NightIndex]:
        """The index of every (night, programme) the caller may read, loaded once per manifest version."""
        found = []
        for night, manifest in self.nights().items():
            digest = self._manifests[night][0]
            for programid, archive in manifest.programmes.items():
                if programmes is not None and programid not in programmes:
                    continue
                key = (night, programid, digest)
                index = self._indexes.get(key)
                if index is None:
                    index = NightIndex.load(self.dest, night, archive)
                    with self._lock:
                        self._indexes = {k: v for k, v in self._indexes.items() if k[:2] != key[:2]}
                        self._indexes[key] = index
                found.append(index)
        return found

    # ------------------------------------------------------------------------------------------ alerts

    def locate(self, candid: int, programmes: set[int]) -> AlertLocation:
        for index in self.indexes(programmes):
            if len(index.candids) and index.candids[0] <= candid <= index.candids[-1]:
                row = index.find(candid)
                if row is not None:
                    return AlertLocation(index.night, index.programid, row, index.tarball)
        raise NotFound(str(candid))

    def packet(self, location: AlertLocation) -> bytes:
        return read_packet(self.read_range, location.tarball, location.row)

    def object_alerts(self, object_id: str, programmes: set[int]) -> pa.Table:
        parts = []
        for index in self.indexes(programmes):
            rows = index.of_object(object_id)
            if rows.num_rows:
                parts.append(_tagged(rows, index))
        if not parts:
            raise NotFound(object_id)
        return pa.concat_tables(parts).sort_by("jd")

    def cone(
        self, ra: float, dec: float, radius: float, since: float | None, until: float | None, programmes: set[int]
    ) -> pa.Table:
        """Alerts within ``radius`` degrees of (ra, dec) and jd in [since, until), nearest first."""
        import numpy as np

        cells = cone_cells(ra, dec, radius)
        parts = [_tagged(index.in_cone(cells, since, until), index) for index in self.indexes(programmes)]
        table = pa.concat_tables(parts) if parts else _tagged(pa.table({}), None)
        if table.num_rows == 0:
            return table
        r1, d1 = np.radians(ra), np.radians(dec)
        r2, d2 = np.radians(table.column("ra").to_numpy()), np.radians(table.column("dec").to_numpy())
        # haversine: exact for small separations where the cosine formula loses digits
        h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
        separation = np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))
        table = table.append_column("separation_deg", pa.array(separation))
        table = table.filter(pa.array(separation <= radius))
        return table.sort_by("separation_deg")


_PUBLIC_COLUMNS = ["candid", "objectId", "jd", "ra", "dec", "fid", "magpsf", "sigmapsf"]


def _tagged(rows: pa.Table, index: NightIndex | None) -> pa.Table:
    if index is None:
        return pa.table(
            {c: pa.array([], t) for c, t in [("candid", pa.int64()), ("night", pa.string()), ("programid", pa.int8())]}
        )
    rows = rows.select(_PUBLIC_COLUMNS)
    rows = rows.append_column("programid", pa.array([index.programid] * rows.num_rows, pa.int8()))
    return rows.append_column("night", pa.array([index.night] * rows.num_rows, pa.string()))
