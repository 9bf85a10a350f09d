"""The per-night manifest: what was read from Kafka, what was written, and the checksum of every output file.

It is the archive's own account, written beside the data (``manifests/<survey>_<YYYYMMDD>.json``), so anyone can
check a download, and `verify` can prove that not one alert was lost or doubled: per partition the offsets read,
per programme ``read = written + duplicates + rejected``; the messages left out (rejects, duplicates with
different bytes) are kept in a file of their own (``set_aside``, see `alertdist.archive.setaside`). It holds no
timestamps, so archiving the same topics twice gives the same manifest too. A partial archive of an aborted
night says so (``partial``, ``night_state``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["FORMAT", "NightManifest", "ProgrammeArchive", "manifest_path"]

FORMAT = "alertdist-archive-manifest/1"
_COUNTS = ("read", "written", "duplicates", "rejected")  # the per-programme counts a report shows


def manifest_path(survey: str, night: str) -> str:
    return f"manifests/{survey}_{night}.json"


@dataclass
class ProgrammeArchive:
    """One programme's part of a night: its topic read, its counts, its two output files."""

    programid: int
    name: str
    topic: str
    partitions: dict[int, dict]  # partition -> {"first_offset", "end_offset", "read"}
    counts: dict[str, int]  # read, written, duplicates, conflicting_duplicates, rejected
    schema_versions: dict[str, int]  # schemavsn -> packets read
    files: dict[str, dict]  # "tarball" / "parquet" -> {"path", "size", "sha256", "crc32", "md5" (tarball only)}
    rejected: list[dict] = field(default_factory=list)  # {"partition", "offset", "size", "reason"}
    conflicting_duplicates: list[dict] = field(default_factory=list)  # first 100
    # the bytes of every reject and conflicting duplicate, kept beside the archive (`alertdist.archive.setaside`):
    # {"path", "size", "sha256", "crc32", "md5": None, "members"}; None when nothing was set aside
    set_aside: dict | None = None
    index: dict | None = None  # {"path", "size", "sha256", "crc32"} of the night's index (archive/index.py)

    @classmethod
    def from_dict(cls, body: dict) -> ProgrammeArchive:
        body = dict(body)
        body["partitions"] = {int(p): v for p, v in body["partitions"].items()}
        return cls(**body)


@dataclass
class NightManifest:
    survey: str
    night: str  # YYYYMMDD
    programmes: dict[int, ProgrammeArchive]
    format: str = FORMAT
    night_state: str = "closed"  # the closing record's state: "closed", or "aborted" (publishing failed)
    partial: bool = False  # True: the night was aborted, the archive holds only what was published
    aborted_reason: str | None = None

    def note(self) -> str:
        """What a listing says about the archive beside its files: "" for a whole night."""
        if not self.partial:
            return ""
        return f"PARTIAL: night {self.night_state} ({self.aborted_reason or 'no reason recorded'})"

    @property
    def path(self) -> str:
        return manifest_path(self.survey, self.night)

    def to_json(self) -> bytes:
        body = {
            "format": self.format,
            "survey": self.survey,
            "night": self.night,
            "night_state": self.night_state,
            "partial": self.partial,
            "aborted_reason": self.aborted_reason,
            "programmes": {str(p): asdict(a) for p, a in sorted(self.programmes.items())},
        }
        for programme in body["programmes"].values():
            programme["partitions"] = {str(p): v for p, v in sorted(programme["partitions"].items())}
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NightManifest:
        body = json.loads(raw)
        if body.get("format") != FORMAT:
            raise ValueError(f"not an alertdist archive manifest (format {body.get('format')!r}, expected {FORMAT!r})")
        programmes = {int(p): ProgrammeArchive.from_dict(a) for p, a in body["programmes"].items()}
        return cls(
            body["survey"],
            body["night"],
            programmes,
            body["format"],
            night_state=body.get("night_state", "closed"),  # manifests written before aborted nights existed
            partial=bool(body.get("partial", False)),
            aborted_reason=body.get("aborted_reason"),
        )

    def totals(self) -> dict[str, int]:
        return {k: sum(a.counts[k] for a in self.programmes.values()) for k in _COUNTS}

    def file_rows(self, *, with_counts: bool = False) -> list[dict]:
        """One row per output file (programme, file, bytes, sha256, md5: "" where none), for a report's table;
        ``with_counts`` adds its programme's read, written, duplicates and rejected counts."""
        keys = _COUNTS if with_counts else ()
        return [
            {
                "programme": a.name,
                "file": f["path"],
                "bytes": f["size"],
                "sha256": f["sha256"],
                "md5": f.get("md5") or "",
                **{k: a.counts[k] for k in keys},
            }
            for a in self.programmes.values()
            for f in a.files.values()
        ]
