"""Each alert's three cutouts, drawn from the night's stamp pool: gzipping stamps is the costly part of building
an alert, so a night makes its pool once (`cutouts.make_triplet_pool`) and only picks and re-dates here."""

from __future__ import annotations

import bisect
import random

from alertdist.nights.dates import unix_of_jd
from alertdist.simulate.cutouts import StampTriplet, set_gzip_mtime
from alertdist.simulate.images import Image

__all__ = ["StampPicker"]


class StampPicker:
    """Picks a detection's stamps: a PSF of matching brightness, or for bogus ones often an odd-looking triplet."""

    def __init__(self, pool: list[StampTriplet], rnd: random.Random):
        self.rnd = rnd
        self.psf_stamps = [t for t in pool if t.kind == "psf"] or pool
        self.psf_peaks = [t.peak for t in self.psf_stamps]
        self.odd_stamps = [t for t in pool if t.kind != "psf"] or pool

    def cutouts(self, candid: int, image: Image, m: dict, kind: str) -> dict:
        """The record's cutoutScience, cutoutTemplate and cutoutDifference for detection `m` on `image`."""
        rnd = self.rnd
        if kind == "bogus" and rnd.random() < 0.6:
            triplet: StampTriplet = rnd.choice(self.odd_stamps)
        else:  # the pooled PSF whose peak best matches this magnitude (FWHM ~2.5 px)
            peak = 10 ** (0.4 * (image.zp - m["magpsf"])) / 10.0
            i = bisect.bisect_left(self.psf_peaks, peak) + rnd.randint(-2, 2)
            triplet = self.psf_stamps[min(max(i, 0), len(self.psf_stamps) - 1)]
        mtime = int(unix_of_jd(image.jd)) + rnd.randint(240, 600)  # processed minutes later
        diff = "scimref" if m["isdiffpos"] == "t" else "refmsci"
        return {
            "cutoutScience": {
                "fileName": f"candid{candid}_pid{image.pid}_targ_sci.fits.gz",
                "stampData": set_gzip_mtime(triplet.science, mtime),
            },
            "cutoutTemplate": {
                "fileName": f"candid{candid}_ref.fits.gz",
                "stampData": set_gzip_mtime(triplet.template, mtime),
            },
            "cutoutDifference": {
                "fileName": f"candid{candid}_pid{image.pid}_targ_{diff}.fits.gz",
                "stampData": set_gzip_mtime(triplet.difference, mtime),
            },
        }
