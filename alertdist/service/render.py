"""Cutouts and light curves as pictures, the way astronomers look at them.

Cutouts: the stamp's gzipped FITS read with astropy, scaled with ZScale (IRAF's display limits, the field's
default for difference imaging), grey, shown with FITS orientation (pixel (1, 1) at the bottom left, as ZTF's
stamps are north up, east left) and flipped where a WCS in the header says otherwise. Light curves: magnitude
against time per band (ZTF g, r, i), detections with their errors, upper limits as open triangles, brighter up.
Matplotlib runs headless (Agg) and without pyplot, so renders are thread-safe.
"""

from __future__ import annotations

import gzip
import io
import warnings

import numpy as np

__all__ = ["BANDS", "CUTOUTS", "cutout_fits", "cutout_png", "lightcurve_png"]

CUTOUTS = {"science": "cutoutScience", "template": "cutoutTemplate", "difference": "cutoutDifference"}
BANDS = {1: ("g", "#2ca02c"), 2: ("r", "#d62728"), 3: ("i", "#ff7f0e")}
_SCALE = 4  # a 63x63 stamp shown at 252x252


def cutout_fits(stamp: bytes) -> bytes:
    """The stamp as a plain FITS file (ZTF ships it gzipped)."""
    return gzip.decompress(stamp) if stamp[:2] == b"\x1f\x8b" else stamp


def _image(stamp: bytes) -> np.ndarray:
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # ZTF writes its SIMPLE card free-format: valid, if old
        with fits.open(io.BytesIO(cutout_fits(stamp))) as hdus:
            header, data = hdus[0].header, np.asarray(hdus[0].data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"a cutout is a 2-D image, this one has {data.ndim} axes")
    # FITS rows go up: row 0 is the bottom. North up, east left unless a WCS says the axes run otherwise.
    image = data[::-1]
    cd11 = header.get("CD1_1", header.get("CDELT1"))
    cd22 = header.get("CD2_2", header.get("CDELT2"))
    if cd22 is not None and cd22 < 0:
        image = image[::-1]
    if cd11 is not None and cd11 > 0:
        image = image[:, ::-1]
    return image


def cutout_png(stamp: bytes) -> bytes:
    """A grey PNG of the stamp, ZScale limits, NaNs (masked pixels) black."""
    from astropy.visualization import ZScaleInterval
    from matplotlib.image import imsave

    image = _image(stamp)
    finite = np.isfinite(image)
    low, high = ZScaleInterval().get_limits(image[finite]) if finite.any() else (0.0, 1.0)
    image = np.where(finite, image, low)
    image = np.repeat(np.repeat(image, _SCALE, axis=0), _SCALE, axis=1)
    out = io.BytesIO()
    imsave(out, image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, format="png")
    return out.getvalue()


def lightcurve_png(object_id: str, detections: list[dict], limits: list[dict]) -> bytes:
    """PNG of an object's light curve. ``detections``: jd, fid, magpsf, sigmapsf; ``limits``: jd, fid, diffmaglim."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for fid, (band, colour) in BANDS.items():
        rows = [d for d in detections if d["fid"] == fid and d.get("magpsf") is not None]
        if rows:
            axes.errorbar(
                [r["jd"] - 2400000.5 for r in rows],
                [r["magpsf"] for r in rows],
                yerr=[r.get("sigmapsf") or 0 for r in rows],
                fmt="o",
                color=colour,
                label=f"ZTF {band}",
                markersize=4,
                capsize=2,
            )
        upper = [u for u in limits if u["fid"] == fid and u.get("diffmaglim") is not None]
        if upper:
            axes.scatter(
                [u["jd"] - 2400000.5 for u in upper],
                [u["diffmaglim"] for u in upper],
                marker="v",
                facecolors="none",
                edgecolors=colour,
                alpha=0.6,
                label=f"{band} upper limit",
            )
    axes.invert_yaxis()
    axes.set_xlabel("MJD")
    axes.set_ylabel("magnitude (PSF)")
    axes.set_title(object_id)
    if axes.has_data():
        axes.legend(fontsize="small")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
