"""Sample packets of every shipped schema version, made by the simulator: the project's own test data.

ZTF's real packets may not be redistributed with the code, so a fresh clone has none. Each shipped schema folder carries
one packet the simulator wrote in that version (`schemas/<version>/sample.avro`, as lsst/alert_packet ships its
samples), and tests draw as many more as they need from `sample_alerts`. Each version gets a night of its own era, so
candids never collide across versions; all are programme 1's (public), as ZTF's shared ones are. Regenerate the
committed files after a simulator or schema change with `python -m alertdist.simulate.samples` (a test checks they are
current).
"""

from __future__ import annotations

import datetime as dt
import sys
from importlib import resources
from pathlib import Path

from alertdist import schemas
from alertdist.simulate.night import SimulatedAlert, simulate_night

__all__ = ["SAMPLE_FILE", "sample_alerts", "sample_night", "sample_path", "write_samples"]

SAMPLE_FILE = "sample.avro"
# The local date of a night from each version's time in production (3.0: the night of UW's 2018 tarball).
_ERA = {"3.0": dt.date(2018, 8, 18), "3.3": dt.date(2020, 2, 1), "4.01": dt.date(2023, 10, 11)}
_AFTER_ERAS = dt.date(2024, 6, 1)
_PUBLIC = {1: 1.0}


def sample_night(version: str) -> dt.date:
    """The simulated night of `version`'s samples: one of its era, a distinct one for every shipped version."""
    if version in _ERA:
        return _ERA[version]
    later = [v for v in schemas.available_versions() if v not in _ERA]
    return _AFTER_ERAS + dt.timedelta(days=30 * later.index(version)) if version in later else _AFTER_ERAS


def sample_alerts(version: str, n: int = 1, *, seed: int = 0) -> list[SimulatedAlert]:
    """`n` simulated alerts written in schema `version` (same arguments, same bytes)."""
    return list(
        simulate_night(n, night=sample_night(version), seed=seed, schema_version=version, programme_weights=_PUBLIC)
    )


def sample_path(version: str) -> Path:
    """Where the committed sample packet of `version` lives (beside its `alert.avsc`)."""
    return Path(str(resources.files(schemas) / version / SAMPLE_FILE))


def write_samples() -> list[Path]:
    """Write one sample packet beside each shipped schema version; returns the files written."""
    written = []
    for version in schemas.available_versions():
        path = sample_path(version)
        path.write_bytes(sample_alerts(version)[0].packet)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_samples():
        print(written_path)
    sys.exit(0)
