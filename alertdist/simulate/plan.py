"""The night's plan: when each exposure is taken, of which field, in which filter, for which programme, and how
many alerts it gives (heavy-tailed, as a real night's are)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from alertdist.simulate.sky import field_grid, lst_deg

__all__ = ["EXPOSURE_S", "Exposure", "exposure_count", "plan"]

EXPOSURE_S = 30.0
CADENCE_S = 40.0  # 30 s exposure + readout + slew


@dataclass(frozen=True, slots=True)
class Exposure:
    index: int
    jd: float
    field: int
    fid: int
    programid: int
    n_alerts: int
    last_visit: bool  # the field is not visited again tonight, so its state can be dropped


def exposure_count(n_alerts: int, window: tuple[float, float]) -> int:
    """~200 alerts per exposure as in a real night, but at least ~√n/2 exposures so a small night has several."""
    most = max(1, int((window[1] - window[0]) * 86400.0 / (CADENCE_S * 1.15)))
    least = min(n_alerts, max(3, round(math.sqrt(n_alerts) / 2)))
    return max(1, min(most, max(least, round(n_alerts / 200))))


def plan(
    n_alerts: int,
    window: tuple[float, float],
    weights: Mapping[int, float],
    rnd: random.Random,
    nrng: np.random.Generator,
) -> list[Exposure]:
    """Exposures of the night: times, heavy-tailed alert counts, fields visited in 2-3 passes, programmes."""
    n_exp = exposure_count(n_alerts, window)
    shares = nrng.lognormal(0.0, 1.0, n_exp)
    counts = (1 + nrng.multinomial(n_alerts - n_exp, shares / shares.sum())).tolist()
    jds = _exposure_times(n_exp, window, rnd)
    slots = _field_slots(n_exp, jds, rnd)
    last = {f: i for i, (f, _) in enumerate(slots)}
    programmes = _apportion(counts, weights)
    return [
        Exposure(i, jds[i], slots[i][0], slots[i][1], programmes[i], counts[i], last[slots[i][0]] == i)
        for i in range(n_exp)
    ]


def _exposure_times(n_exp: int, window: tuple[float, float], rnd: random.Random) -> list[float]:
    jds, t = [], window[0] + rnd.uniform(0.0, 300.0) / 86400.0
    for _ in range(n_exp):
        jds.append(round(t, 7))
        gap = CADENCE_S - 7.0 + rnd.gammavariate(4.0, 1.75)
        if rnd.random() < 0.02:  # a filter change or a long slew
            gap += rnd.uniform(60.0, 150.0)
        t += gap / 86400.0
    return jds


def _field_slots(n_exp: int, jds: list[float], rnd: random.Random) -> list[tuple[int, int]]:
    """(field, fid) per exposure: fields in blocks, each visited in 2 (sometimes 3) passes in different filters."""
    grid, used = field_grid(), set()
    block_size = max(1, min(15, n_exp // 8))  # 15 fields: ~10 min between passes, bounded memory
    slots: list[tuple[int, int]] = []
    while len(slots) < n_exp:
        lst = lst_deg(jds[len(slots)])
        visible = [
            i + 1
            for i, (ra, dec) in enumerate(grid)
            if -28.0 < dec < 80.0 and abs((ra - lst + 180.0) % 360.0 - 180.0) < 40.0
        ]
        fresh = [f for f in visible if f not in used] or visible
        fields = sorted(rnd.sample(fresh, min(block_size, len(fresh))))
        used.update(fields)
        first = rnd.choice((1, 2))
        fids = [first, 3 - first] + ([3 if rnd.random() < 0.3 else first] if rnd.random() < 0.2 else [])
        slots.extend((f, fid) for fid in fids for f in fields)
    return slots[:n_exp]


def _apportion(counts: list[int], weights: Mapping[int, float]) -> list[int]:
    """A programme per exposure such that each programme's share of *alerts* is close to its weight."""
    weights = {p: w for p, w in weights.items() if w > 0}
    total_weight = sum(weights.values())
    total = sum(counts)
    given = dict.fromkeys(weights, 0)
    out = [0] * len(counts)
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        programme = max(weights, key=lambda p: weights[p] / total_weight * total - given[p])
        out[i] = programme
        given[programme] += counts[i]
    return out
