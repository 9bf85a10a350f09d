"""Free the room old nights take on this machine: their Kafka topics and their files in a local archive.

Each `make night` adds a night's topics (kept 7 days by Kafka) and its archive files; after a few nights
`.alertdist` weighs gigabytes. `plan_clean` says what would go (the newest nights are kept), `apply_clean` removes
exactly that. An archive that is not a local folder (s3://, https://) is never touched.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from alertdist.archive.tarball import md5sums_text, parse_md5sums
from alertdist.kafka.clients import admin_client
from alertdist.settings import Settings

__all__ = ["CleanPlan", "apply_clean", "plan_clean"]


@dataclass
class CleanPlan:
    """What cleaning would remove: the nights kept and dropped, their topics and their local archive files."""

    kept: list[str]
    dropped: list[str]
    topics: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # files and folders (Parquet partitions)
    bytes: int = 0

    def describe(self) -> str:
        if not self.dropped:
            return f"nothing to clean: {len(self.kept)} night(s), all kept ({', '.join(self.kept) or 'none'})"
        return (
            f"nights {', '.join(self.dropped)}: {len(self.topics)} Kafka topic(s) and {len(self.files)} archive "
            f"file(s) or folder(s), {self.bytes / 1e6:,.1f} MB; keeping {', '.join(self.kept) or 'nothing'}"
        )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _archive_files(root: Path, survey: str, night: str) -> list[Path]:
    """A night's files in a local archive root: tarballs, its Parquet partition and its manifest."""
    found = sorted(root.glob(f"{survey}_*_{night}.tar.gz"))
    found += [root / "parquet" / f"night={night}", root / "manifests" / f"{survey}_{night}.json"]
    return [p for p in found if p.exists()]


def plan_clean(settings: Settings, keep: int = 1) -> CleanPlan:
    """The nights of this survey on the broker and in the local archive, all but the newest ``keep`` dropped."""
    if keep < 0:
        raise ValueError(f"--keep takes a number of nights, 0 or more (got {keep})")
    night_of = re.compile(rf"^{re.escape(settings.survey)}_(\d{{8}})_")
    topics = admin_client(settings.kafka("admin")).list_topics(timeout=30).topics
    by_night: dict[str, list[str]] = {}
    for topic in topics:
        if m := night_of.match(topic):
            by_night.setdefault(m.group(1), []).append(topic)
    root = None if "://" in settings.archive else Path(settings.archive)
    nights = set(by_night)
    if root is not None and root.is_dir():
        nights |= {
            m.group(1)
            for p in root.glob(f"{settings.survey}_*_*.tar.gz")
            if (m := re.search(r"_(\d{8})\.tar\.gz$", p.name))
        }
        nights |= {p.name.removeprefix("night=") for p in (root / "parquet").glob("night=*")}
    ordered = sorted(nights)
    kept, dropped = ordered[len(ordered) - keep :] if keep else [], ordered[: len(ordered) - keep]
    plan = CleanPlan(kept=kept, dropped=dropped)
    for night in dropped:
        plan.topics += sorted(by_night.get(night, []))
        if root is not None:
            plan.files += _archive_files(root, settings.survey, night)
    plan.bytes = sum(_size(p) for p in plan.files)
    return plan


def apply_clean(settings: Settings, plan: CleanPlan) -> None:
    """Delete the plan's topics and files, and the dropped tarballs' lines of the archive's MD5SUMS."""
    if plan.topics:
        admin = admin_client(settings.kafka("admin"))  # kept alive until every deletion is answered
        futures = admin.delete_topics(plan.topics, operation_timeout=60)
        for topic, future in futures.items():
            try:
                future.result()
            except Exception as e:
                raise RuntimeError(f"could not delete topic {topic}: {e}") from e
    for path in plan.files:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    gone = {p.name for p in plan.files}
    sums = Path(settings.archive) / "MD5SUMS"
    if gone and "://" not in settings.archive and sums.is_file():
        entries = {name: md5 for name, md5 in parse_md5sums(sums.read_text()).items() if name not in gone}
        sums.write_text(md5sums_text(entries))
