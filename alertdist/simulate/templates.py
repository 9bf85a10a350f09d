"""Real packets as templates: their stamps and shape measurements stand in for the simulated ones."""

from __future__ import annotations

from pathlib import Path

from alertdist.avro import codec
from alertdist.simulate.cutouts import StampTriplet

__all__ = ["from_templates"]


def from_templates(
    folder: Path, pool: list[StampTriplet], measure: list[tuple[dict, dict]]
) -> tuple[list[StampTriplet], list[tuple[dict, dict]]]:
    """Real packets as templates: their stamps join the pool, their shape measurements replace the simulated ones.

    Identity, time, position, photometry and history stay simulated, so a night stays self-consistent.
    """
    paths = sorted(Path(folder).glob("*.avro"))
    if not paths:
        raise FileNotFoundError(f"no *.avro packets in the templates folder {folder}")
    shared_keys = tuple(measure[0][0])
    extra_keys = tuple(measure[0][1])
    real_pool, real_measure = [], []
    for path in paths:
        try:
            record = codec.decode(path.read_bytes())
        except (OSError, codec.AlertPacketError) as e:
            raise ValueError(f"cannot use {path} as a template packet: {e}") from e
        c = record["candidate"]
        if all(c.get(k) is not None for k in shared_keys):
            real_measure.append(({k: c[k] for k in shared_keys}, {k: c.get(k) for k in extra_keys}))
        if all(record.get(k) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")):
            # Real difference peaks are unknown without decoding; spread them over the pool's range by magnitude.
            peak = 10 ** (0.4 * (c.get("magzpsci") or 26.2) - 0.4 * c["magpsf"]) / 10.0
            real_pool.append(
                StampTriplet(
                    record["cutoutScience"]["stampData"],
                    record["cutoutTemplate"]["stampData"],
                    record["cutoutDifference"]["stampData"],
                    peak,
                    "psf",
                )
            )
    return sorted(real_pool, key=lambda t: t.peak) or pool, real_measure or measure
