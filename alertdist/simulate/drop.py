"""A simulated night written into a drop folder, one `<candid>.avro` per alert, at the night's own cadence."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from alertdist.atomic import write_atomically
from alertdist.nights.pacing import pace_by_jd
from alertdist.simulate.records import SimulatedAlert

__all__ = ["DropCounts", "write_drop_folder"]


@dataclass(frozen=True, slots=True)
class DropCounts:
    """What `write_drop_folder` wrote."""

    files: int
    bytes: int
    exposures: int
    seconds: float


def write_drop_folder(
    alerts: Iterable[SimulatedAlert],
    folder: Path,
    *,
    speed: float | None = None,
    progress: Callable[[int, SimulatedAlert], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DropCounts:
    """Write each packet as `<candid>.avro` in `folder`, exposure by exposure, at the night's cadence.

    A file appears under its final name only once complete (written as a dot-file beside it, then renamed:
    `alertdist.atomic`), so a watcher that ignores dot-files never sees a partial packet. With `speed` (e.g. 60 = a
    minute of night per second) exposures are spaced by their jd difference / speed; None writes as fast as possible.
    `progress(files_written, alert)` is called after each file.
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be positive or None, got {speed}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = clock()
    files = size = exposures = 0
    last_exposure = None
    # an exposure's alerts share its jd: pacing by jd holds each exposure back until its time in the night
    for alert in alerts if speed is None else pace_by_jd(alerts, speed, clock=clock, sleep=sleep):
        if alert.exposure != last_exposure:
            exposures += 1
            last_exposure = alert.exposure
        final = folder / f"{alert.candid}.avro"
        try:
            write_atomically(final, alert.packet)
        except OSError as e:
            raise OSError(f"cannot write alert {alert.candid} to {final}: {e}") from e
        files += 1
        size += len(alert.packet)
        if progress is not None:
            progress(files, alert)
    return DropCounts(files=files, bytes=size, exposures=exposures, seconds=clock() - started)
