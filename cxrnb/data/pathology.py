"""What each CXR14 finding does to the phantom chest, where a radiologist would look for it.

A few findings change the chest's geometry (``reshape``: a larger heart for Cardiomegaly, flat low
domes for Emphysema, ...); the others add a shadow of their own (``OVERLAYS``: an opaque base for
Effusion, a round opacity for a Nodule, ...). Each draws from a random generator of its own, so
adding a finding never changes the rest of the picture. A caricature, not a radiograph.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter

from cxrnb.data.anatomy import EDGE, Anatomy, step


def reshape(an: Anatomy, findings: set[str], view: str, own) -> Anatomy:
    """Findings that change the chest's geometry rather than add a shadow; `own(f)` is the
    finding's random generator."""
    if view == "AP":        # portable film, tube close to the chest: heart magnified, shallow
        an = replace(an, heart_w=an.heart_w * 1.08, heart_h=an.heart_h * 1.05,
                     dome=(an.dome[0] - 0.04, an.dome[1] - 0.04))
    if "Emphysema" in findings:     # hyperinflated: large dark lungs, flat low domes, few vessels
        an = replace(an, lung_w=an.lung_w * 1.08, lung_top=an.lung_top - 0.05,
                     dome=(an.dome[0] + 0.12, an.dome[1] + 0.12), dome_curve=an.dome_curve * 0.35,
                     air=an.air * 1.3, markings=an.markings * 0.4, heart_w=an.heart_w * 0.88)
    if "Cardiomegaly" in findings:  # cardiothoracic ratio above 0.5
        an = replace(an, heart_w=an.heart_w * own("Cardiomegaly").uniform(1.35, 1.55),
                     heart_h=an.heart_h * 1.12)
    if "Atelectasis" in findings:   # volume loss: one hemidiaphragm pulled up, heart pulled over
        g = own("Atelectasis")
        side = int(g.integers(2))               # the same first draw as its overlay: same side
        dome = list(an.dome)
        dome[side] -= g.uniform(0.10, 0.18)
        an = replace(an, dome=tuple(dome), heart_x=an.heart_x + (0.04 if side else -0.04))
    return an


def _band_noise(shape, sigma_px: float, rng) -> np.ndarray:
    """Unit-variance Gaussian noise with blobs about `sigma_px` pixels wide."""
    n = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return n / n.std()


def _blob(X, Y, x0, y0, r, rng, lobes=0.0) -> np.ndarray:
    """A round opacity of radius r, its outline optionally lobulated."""
    dist, ang = np.hypot(X - x0, Y - y0), np.arctan2(Y - y0, X - x0)
    k = rng.uniform(0, 2 * np.pi, 3)
    rr = r * (1 + lobes * (np.sin(3 * ang + k[0]) + 0.6 * np.sin(5 * ang + k[1])
                           + 0.4 * np.sin(2 * ang + k[2])) / 2)
    return step((rr - dist) / (0.25 * r + EDGE)) * (1 - 0.3 * (dist / rr) ** 2).clip(0)


# Each overlay adds one finding's density to the film, given the pixel coordinates, the chest, its
# lungs, the healthy chest's parts (``normal_chest``) and a random generator of its own.
def _effusion(X, Y, an, lungs, parts, rng):       # fluid in the base, meniscus up the lateral wall
    out = 0.0
    for lung in (lungs if rng.random() < 0.3 else [lungs[rng.integers(2)]]):
        level = an.dome[lung.side > 0] - rng.uniform(0.08, 0.28) - 0.18 * np.clip(lung.u, 0, 1) ** 2
        out = out + (an.air + 0.1) * step((Y - level) / 0.03) * lung.mask
    return out


def _pneumothorax(X, Y, an, lungs, parts, rng):   # air rim without vessels, a fine pleural line
    lung = lungs[rng.integers(2)]
    edge = 1.0 - rng.uniform(0.25, 0.45)                    # where the collapsed lung ends
    upper = step((an.dome[lung.side > 0] - 0.25 - Y) / 0.08)
    rim = lung.mask * step((lung.u - edge) / 0.03) * upper
    line = np.exp(-((lung.u - edge) * lung.half / max(0.005, parts["px"])) ** 2) * lung.mask * upper
    return -rim * (0.25 + parts["markings"]) + 0.35 * line


def _nodule(X, Y, an, lungs, parts, rng):         # one to three small round opacities
    out = 0.0
    for _ in range(rng.integers(1, 4)):
        x0, y0 = lungs[rng.integers(2)].point(rng, an)
        out = out + 0.45 * _blob(X, Y, x0, y0, rng.uniform(0.018, 0.035), rng)
    return out


def _mass(X, Y, an, lungs, parts, rng):           # one large lobulated opacity
    x0, y0 = lungs[rng.integers(2)].point(rng, an, zone=(0.3, 0.75), lateral=(-0.3, 0.5))
    return 0.5 * _blob(X, Y, x0, y0, rng.uniform(0.07, 0.12), rng, lobes=0.15)


def _patches(X, Y, an, lungs, rng, n, radius, density, patchiness):
    """Fluffy airspace opacities: blobs broken up by noise, kept inside the lungs."""
    out = 0.0
    for _ in range(n):
        lung = lungs[rng.integers(2)]
        x0, y0 = lung.point(rng, an, zone=(0.3, 0.95))
        shape = step((radius - np.hypot(X - x0, (Y - y0) * 0.8)) / (0.4 * radius))
        out = out + shape * lung.mask
    texture = 1 + patchiness * _band_noise(X.shape, 0.012 * X.shape[0], rng)
    return density * np.clip(out, 0, 1) * texture.clip(0)


def _infiltration(X, Y, an, lungs, parts, rng):   # several faint ill-defined patches
    return _patches(X, Y, an, lungs, rng, rng.integers(3, 6), 0.09, 0.28, 0.6)


def _pneumonia(X, Y, an, lungs, parts, rng):      # one denser fluffy patch in a lower zone
    return _patches(X, Y, an, lungs, rng, 1, rng.uniform(0.13, 0.18), 0.45, 0.45)


def _consolidation(X, Y, an, lungs, parts, rng):  # a whole lobe white, sharp at the fissure
    lung = lungs[rng.integers(2)]
    fissure = an.lung_top + rng.uniform(0.45, 0.6) * (an.dome[lung.side > 0] - an.lung_top)
    lower = rng.random() < 0.7
    lobe = step(((Y - fissure) if lower else (fissure - Y)) / EDGE) * lung.mask
    return (an.air * 0.75) * lobe * (1 + 0.15 * _band_noise(X.shape, 0.02 * X.shape[0], rng))


def _edema(X, Y, an, lungs, parts, rng):          # bilateral perihilar "bat wing" haze
    out = 0.0
    for lung in lungs:
        r = np.hypot(X - lung.side * 0.15, (Y - 0.0) * 0.8)
        out = out + np.exp(-(r / rng.uniform(0.28, 0.36)) ** 2) * lung.mask
    return 0.45 * out


def _fibrosis(X, Y, an, lungs, parts, rng):       # reticular net, worst in the lower periphery
    n = _band_noise(X.shape, 0.006 * X.shape[0], rng)
    net = np.exp(-(n / 0.3) ** 2)
    where = sum(lung.mask * step((lung.u + 0.2) / 0.2) for lung in lungs)
    return 0.25 * net * where * step((Y + 0.2) / 0.15)


def _pleural_thickening(X, Y, an, lungs, parts, rng):    # a bright band along the lateral pleura
    out = 0.0
    for lung in (lungs if rng.random() < 0.4 else [lungs[rng.integers(2)]]):
        width = rng.uniform(0.10, 0.18) * (1 + 0.4 * _band_noise(X.shape, 0.03 * X.shape[0], rng))
        out = out + lung.mask * step((lung.u - (1 - width)) / 0.02)
    return 0.8 * out


def _hernia(X, Y, an, lungs, parts, rng):         # hiatus hernia: a bowl with an air-fluid level
    x0 = an.heart_x - 0.05 + 0.03 * rng.standard_normal()
    y0, r = an.heart_y - 0.3 * an.heart_h, rng.uniform(0.11, 0.15)
    bowl = step((r - np.hypot((X - x0) * 0.85, Y - y0)) / EDGE)
    air = bowl * step((y0 - 0.2 * r - Y) / EDGE)        # gas above a flat fluid level
    rim = np.exp(-((np.hypot((X - x0) * 0.85, Y - y0) - r) / max(0.008, parts["px"])) ** 2)
    return 0.35 * rim + 0.2 * bowl - 1.0 * air


def _atelectasis(X, Y, an, lungs, parts, rng):  # plate-like band (the volume loss: reshape)
    lung = lungs[rng.integers(2)]
    y0 = an.dome[lung.side > 0] - rng.uniform(0.1, 0.2)
    band = np.exp(-((Y - y0 - 0.12 * (X - lung.xc) * lung.side) / 0.02) ** 2)
    return 0.35 * band * lung.mask


OVERLAYS = {"Effusion": _effusion, "Pneumothorax": _pneumothorax, "Nodule": _nodule, "Mass": _mass,
            "Infiltration": _infiltration, "Pneumonia": _pneumonia, "Consolidation": _consolidation,
            "Edema": _edema, "Fibrosis": _fibrosis, "Pleural_Thickening": _pleural_thickening,
            "Hernia": _hernia, "Atelectasis": _atelectasis}
