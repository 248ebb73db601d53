"""An offline stand-in for CXR14: procedurally drawn chest-like radiographs with visible labels.

Why: tests, CI and first runs of every notebook need images in the official layout, with the real
label vocabulary and frequencies, on machines that cannot fetch 42 GB from NIH. The phantom is
written exactly like the release (``images/<patient>_<follow-up>.png`` + ``Data_Entry_2017.csv``),
so the normal loader reads it; a ``PHANTOM`` marker file makes every result from it say
"synthetic phantom". Each finding changes the picture where a radiologist would look (a larger
heart for Cardiomegaly, an opaque base for Effusion, ...), so a classifier or a conditional
generator has something real to learn. It is a caricature, not a radiograph.

Drawing model: an X-ray records how much matter a ray crossed, so each structure adds (bone,
heart, fluid) or removes (air in the lungs) "density" D on a grid of normalised coordinates
x, y in [-1, 1] (y points down; the patient's left is the image's right, as in a PA film).
The film shows 1 - exp(-D), blurred, with noise. Every image is a pure function of
(seed, patient, follow-up, findings, view, sex), so a CSV row re-draws its own image exactly.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates
from tqdm.auto import tqdm

from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS, NO_FINDING, VIEWS

# Images carrying each label in the official Data_Entry_2017_v2020.csv (112,120 images, 51,759 of
# them with at least one finding). A test recounts them from the packaged table.
CXR14_COUNTS = {
    "No Finding": 60361, "Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559,
    "Nodule": 6331, "Mass": 5782, "Pneumothorax": 5302, "Consolidation": 4667,
    "Pleural_Thickening": 3385, "Cardiomegaly": 2776, "Emphysema": 2516, "Edema": 2303,
    "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227,
}
CXR14_IMAGES, CXR14_ABNORMAL = 112_120, 51_759
P_PA = 67_310 / CXR14_IMAGES    # share of PA views (the rest are AP)
P_MALE = 63_340 / CXR14_IMAGES

# The official header, verbatim: two of its column names contain a comma, so it has 9 names
# for 11 fields and pandas reads 11 columns ("OriginalImage[Width", "Height]", ...).
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
          "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
FIELD_OF_VIEW_MM = 400.0        # the phantom's film is 40 cm wide, about a real detector's


def _finding_rates() -> np.ndarray:
    """Per-finding probabilities for an abnormal image, so that CXR14's frequencies come out.

    Findings are drawn independently with rates c * p_i (p_i = share of abnormal images with
    finding i) and redrawn when none came up. Given "at least one", finding i then has frequency
    c * p_i / P(at least one); choosing c = P(at least one) -- a fixed point, found by
    iteration -- makes that exactly p_i, and the mean count per abnormal image sum(p_i) = 1.57,
    as in CXR14.
    """
    p = np.array([CXR14_COUNTS[f] for f in FINDINGS]) / CXR14_ABNORMAL
    c = 1.0
    for _ in range(200):
        c = 1.0 - np.prod(1.0 - c * p)
    return c * p


FINDING_RATES = _finding_rates()


def sample_findings(rng: np.random.Generator) -> tuple[str, ...]:
    """One image's findings with CXR14's frequencies; () means "No Finding"."""
    if rng.random() < CXR14_COUNTS[NO_FINDING] / CXR14_IMAGES:
        return ()
    while True:
        hit = rng.random(len(FINDINGS)) < FINDING_RATES
        if hit.any():
            return tuple(f for f, h in zip(FINDINGS, hit) if h)


# ----------------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class Anatomy:
    """One chest's geometry in normalised coordinates (the patient's own, before positioning)."""

    lung_x: float = 0.38            # distance of each lung's centre from the midline
    lung_w: float = 0.30            # lung half-width at its widest
    lung_top: float = -0.78         # apex height
    dome: tuple[float, float] = (0.28, 0.33)   # hemidiaphragm height: image left (patient right,
    dome_curve: float = 0.15                    # higher because of the liver), image right
    heart_x: float = 0.08           # heart centre, a little to the patient's left
    heart_y: float = 0.28           # its lower half hides below the diaphragm
    heart_w: float = 0.28           # semi-axes: cardiothoracic ratio about 0.43
    heart_h: float = 0.38
    thorax_w: float = 0.90          # half-width of the body at the chest
    air: float = 0.80               # density the air in the lungs removes (inspiration, habitus)
    soft: float = 1.00              # soft-tissue density (habitus)
    bone: float = 0.45
    markings: float = 0.25          # strength of the vascular lung markings
    rib_pitch: float = 0.12
    rib_phase: float = 0.0


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random patient: every length varies by a few percent, densities by more."""
    a, j = Anatomy(), lambda s: 1.0 + s * rng.standard_normal()     # j: relative jitter
    d = lambda s: s * rng.standard_normal()                              # absolute jitter
    return Anatomy(
        lung_x=a.lung_x * j(0.04), lung_w=a.lung_w * j(0.06), lung_top=a.lung_top + d(0.03),
        dome=(a.dome[0] + d(0.03), a.dome[1] + d(0.03)), dome_curve=a.dome_curve * j(0.15),
        heart_x=a.heart_x + d(0.02), heart_y=a.heart_y * j(0.05), heart_w=a.heart_w * j(0.06),
        heart_h=a.heart_h * j(0.06), thorax_w=a.thorax_w * j(0.04), air=a.air * j(0.08),
        soft=a.soft * j(0.10), bone=a.bone * j(0.12), markings=a.markings * j(0.2),
        rib_pitch=a.rib_pitch * j(0.05), rib_phase=d(0.03))


def _reshape(an: Anatomy, findings: set[str], view: str, own) -> Anatomy:
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


# ----------------------------------------------------------------------------------- drawing
def _step(z: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 step; `z` is a signed distance divided by the edge width."""
    return 0.5 * (1.0 + np.tanh(z))


EDGE = 0.012        # softness of organ outlines, in normalised units (1.5 px at 256 px)


@dataclass
class _Lung:
    side: int               # -1: image left (patient right), +1: image right
    xc: float               # centre
    half: np.ndarray        # half-width at each row
    bottom: np.ndarray      # diaphragm height below each column
    mask: np.ndarray        # soft inside-mask
    u: np.ndarray           # signed lateral position: 0 centre, +1 lateral border, -1 medial

    def point(self, rng: np.random.Generator, an: Anatomy, zone=(0.2, 0.85), lateral=(-0.6, 0.75)):
        """A random point well inside the lung: height `zone` (0 apex, 1 dome), across `lateral`."""
        y = an.lung_top + rng.uniform(*zone) * (an.dome[self.side > 0] - an.lung_top)
        return self.xc + self.side * rng.uniform(*lateral) * _lung_half(an, y), y


def _lung_half(an: Anatomy, y):
    """Lung half-width at height y: a rounded apex widening to lung_w."""
    return an.lung_w * np.sqrt(np.clip((y - an.lung_top) / 0.4, 0, 1)) + 1e-3


def _lungs(X: np.ndarray, Y: np.ndarray, an: Anatomy) -> list[_Lung]:
    lungs = []
    for side in (-1, 1):
        xc = side * an.lung_x
        half = _lung_half(an, Y)
        bottom = an.dome[side > 0] + an.dome_curve * ((X - xc + side * 0.05) / an.lung_w) ** 2
        mask = (_step((half - np.abs(X - xc)) / EDGE) * _step((bottom - Y) / EDGE)
                * _step((Y - an.lung_top) / EDGE))
        lungs.append(_Lung(side, xc, half, bottom, mask, side * (X - xc) / half))
    return lungs


def _radial_markings(X, Y, hx, hy, rng) -> np.ndarray:
    """Vessels fanning out of a hilum: zero-crossings of noise that is smooth along the radius
    and rough across it, sampled in polar coordinates around (hx, hy)."""
    field = gaussian_filter(rng.standard_normal((240, 48)), (1.0, 5.0), mode=("wrap", "nearest"))
    field /= field.std()
    r, theta = np.hypot(X - hx, Y - hy), np.arctan2(Y - hy, X - hx)
    coords = np.stack([(theta + np.pi) / (2 * np.pi) * 240, np.clip(r, 0, 1) * 47])
    ridge = np.exp(-(map_coordinates(field, coords, order=1, mode="grid-wrap") / 0.3) ** 2)
    return ridge * np.exp(-r / 0.45) * _step((r - 0.04) / 0.02)


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
    return _step((rr - dist) / (0.25 * r + EDGE)) * (1 - 0.3 * (dist / rr) ** 2).clip(0)


# Each overlay adds one finding's density to the film, given the pixel coordinates, the chest and
# a random generator of its own (so adding a finding never changes the rest of the picture).
def _effusion(X, Y, an, lungs, parts, rng):       # fluid in the base, meniscus up the lateral wall
    out = 0.0
    for lung in (lungs if rng.random() < 0.3 else [lungs[rng.integers(2)]]):
        level = an.dome[lung.side > 0] - rng.uniform(0.08, 0.28) - 0.18 * np.clip(lung.u, 0, 1) ** 2
        out = out + (an.air + 0.1) * _step((Y - level) / 0.03) * lung.mask
    return out


def _pneumothorax(X, Y, an, lungs, parts, rng):   # air rim without vessels, a fine pleural line
    lung = lungs[rng.integers(2)]
    edge = 1.0 - rng.uniform(0.25, 0.45)                    # where the collapsed lung ends
    upper = _step((an.dome[lung.side > 0] - 0.25 - Y) / 0.08)
    rim = lung.mask * _step((lung.u - edge) / 0.03) * upper
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
        shape = _step((radius - np.hypot(X - x0, (Y - y0) * 0.8)) / (0.4 * radius))
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
    lobe = _step(((Y - fissure) if lower else (fissure - Y)) / EDGE) * lung.mask
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
    where = sum(lung.mask * _step((lung.u + 0.2) / 0.2) for lung in lungs)
    return 0.25 * net * where * _step((Y + 0.2) / 0.15)


def _pleural_thickening(X, Y, an, lungs, parts, rng):    # a bright band along the lateral pleura
    out = 0.0
    for lung in (lungs if rng.random() < 0.4 else [lungs[rng.integers(2)]]):
        width = rng.uniform(0.10, 0.18) * (1 + 0.4 * _band_noise(X.shape, 0.03 * X.shape[0], rng))
        out = out + lung.mask * _step((lung.u - (1 - width)) / 0.02)
    return 0.8 * out


def _hernia(X, Y, an, lungs, parts, rng):         # hiatus hernia: a bowl with an air-fluid level
    x0 = an.heart_x - 0.05 + 0.03 * rng.standard_normal()
    y0, r = an.heart_y - 0.3 * an.heart_h, rng.uniform(0.11, 0.15)
    bowl = _step((r - np.hypot((X - x0) * 0.85, Y - y0)) / EDGE)
    air = bowl * _step((y0 - 0.2 * r - Y) / EDGE)        # gas above a flat fluid level
    rim = np.exp(-((np.hypot((X - x0) * 0.85, Y - y0) - r) / max(0.008, parts["px"])) ** 2)
    return 0.35 * rim + 0.2 * bowl - 1.0 * air


def _atelectasis(X, Y, an, lungs, parts, rng):  # plate-like band (the volume loss: _reshape)
    lung = lungs[rng.integers(2)]
    y0 = an.dome[lung.side > 0] - rng.uniform(0.1, 0.2)
    band = np.exp(-((Y - y0 - 0.12 * (X - lung.xc) * lung.side) / 0.02) ** 2)
    return 0.35 * band * lung.mask


OVERLAYS = {"Effusion": _effusion, "Pneumothorax": _pneumothorax, "Nodule": _nodule, "Mass": _mass,
            "Infiltration": _infiltration, "Pneumonia": _pneumonia, "Consolidation": _consolidation,
            "Edema": _edema, "Fibrosis": _fibrosis, "Pleural_Thickening": _pleural_thickening,
            "Hernia": _hernia, "Atelectasis": _atelectasis}


def _normal_chest(X, Y, an: Anatomy, lungs: list[_Lung], sex: str, rng) -> tuple[np.ndarray, dict]:
    """Density of a healthy chest: body and arms, lungs with vessels, mediastinum, heart, bones."""
    ax, px = np.abs(X), 2.0 / X.shape[1]         # px: pixel pitch, the thinnest line we can draw
    torso = an.thorax_w * (0.5 + 0.5 * _step((Y + 0.9) / 0.06))           # neck, then shoulders
    D = an.soft * _step((torso - ax) / 0.02) * (0.85 + 0.3 * (1 - (X / an.thorax_w) ** 2).clip(0))
    arms = _step((0.09 - np.abs(ax - an.thorax_w - 0.13)) / 0.02) * _step((Y + 0.8) / 0.08)
    D = D + 0.8 * an.soft * arms
    below = np.where(X < 0, lungs[0].bottom, lungs[1].bottom)
    D = D + 0.3 * _step((Y - below) / 0.02) * _step((an.lung_x + an.lung_w - ax) / 0.05)  # abdomen
    markings = 0.0
    for lung in lungs:
        base = 1 - 0.3 * np.clip((Y - an.lung_top) / (an.dome[lung.side > 0] - an.lung_top), 0, 1)
        D = D - an.air * lung.mask * base
        vessels = _radial_markings(X, Y, lung.side * 0.14, -0.05, rng)
        markings = markings + an.markings * vessels * lung.mask
    D = D + markings
    # mediastinum with trachea and aortic knob, heart, stomach bubble under the left dome
    D = D + 0.5 * _step((0.1 + 0.04 * (Y + 1) - ax) / EDGE) * _step((an.heart_y - Y) / 0.1)
    D = D - 0.2 * _step((0.022 - ax) / 0.006) * _step((-0.15 - Y) / 0.02)
    D = D + 0.3 * _step((0.055 - np.hypot(X - 0.11, Y + 0.3)) / EDGE)
    hx, hy = X - an.heart_x, Y - an.heart_y          # heart: a tilted ellipse on the diaphragm
    q = np.hypot((hx * np.cos(0.3) + hy * np.sin(0.3)) / an.heart_w,
                 (hy * np.cos(0.3) - hx * np.sin(0.3)) / an.heart_h)
    D = D + 0.6 * _step((1 - q) * an.heart_h / EDGE) * _step((below + 0.03 - Y) / 0.03)
    for side in (-1, 1):                                    # hilar vessels
        D = D + 0.2 * np.exp(-((X - side * 0.17) / 0.06) ** 2 - ((Y + 0.03) / 0.13) ** 2)
    D = D - 0.3 * _step((0.07 - np.hypot((X - 0.33) * 0.8, Y - an.dome[1] - 0.12)) / EDGE)
    if sex == "F":      # breast shadows over the lower lateral zones
        for side in (-1, 1):
            D = D + 0.14 * _step((0.32 - np.hypot(X - side * 0.45, (Y - 0.32) * 1.3)) / 0.03)
    # bones: spine with disc spaces, posterior and faint anterior ribs, clavicles
    disc = np.exp(-((np.mod(Y / 0.09, 1.0) - 0.5) / 0.1) ** 2)
    D = D + an.bone * 0.45 * _step((0.055 - ax) / 0.01) * (1 - 0.5 * disc)
    ribs = 0.0
    posterior = 0.5 * ax**2 + 1.5 * np.clip(ax - 0.5, 0, None) ** 2
    for shape, weight, lo in ((posterior, 1.0, 0.05), (0.35 * (0.75 - ax), 0.4, 0.25)):
        phase = (Y - shape - an.lung_top + 0.04 - an.rib_phase) / an.rib_pitch
        frac = np.abs(np.mod(phase, 1.0) - 0.5) * an.rib_pitch       # distance from a rib's axis
        half = 0.2 * an.rib_pitch
        edge = max(0.006, px)
        rib = 0.6 * _step((half - frac) / edge) + 0.6 * np.exp(-((frac - half) / edge) ** 2)
        inside = ((phase > 0) & (phase < 10)) * _step((ax - lo) / 0.03)
        ribs = ribs + weight * rib * inside * _step((an.lung_x + an.lung_w + 0.05 - ax) / 0.03)
    D = D + 0.3 * an.bone * ribs
    clav_y = an.lung_top + 0.1 - 0.22 * (ax - 0.08) + 0.03 * np.sin(np.pi * (ax - 0.08) / 0.5)
    clavicles = (np.exp(-((Y - clav_y) / 0.024) ** 4) * _step((ax - 0.07) / 0.01)
                 * _step((0.62 - ax) / 0.02))
    D = D + 0.8 * an.bone * clavicles
    return D, {"markings": markings, "px": px}


def draw_chest(findings: Iterable[str] = (), size: int = 256, seed: int = 0, patient: int = 1,
               follow_up: int = 0, view: str = "PA", sex: str = "M") -> np.ndarray:
    """One phantom radiograph, uint8 (size, size).

    The patient's anatomy depends on (seed, patient) only and the positioning, exposure and noise
    on (seed, patient, follow_up); each finding draws from a generator of its own. So the same
    call with and without a finding shows the same chest, differing only by that finding.
    """
    findings = set(findings)
    if findings - set(FINDINGS):
        raise CxrnbError(f"unknown finding(s) {sorted(findings - set(FINDINGS))}; "
                         f"choose from {', '.join(FINDINGS)}")
    if view not in VIEWS or sex not in ("M", "F"):
        raise CxrnbError(f"view={view!r}, sex={sex!r}: use view 'PA' or 'AP' and sex 'M' or 'F'")
    shot = np.random.default_rng([seed, patient, follow_up])

    def own(f: str) -> np.random.Generator:
        return np.random.default_rng([seed, patient, follow_up, 1 + FINDINGS.index(f)])

    an = _reshape(sample_anatomy(np.random.default_rng([seed, patient])), findings, view, own)
    # positioning: shift, slight rotation, how much of the frame the chest fills
    dx, dy = 0.03 * shot.standard_normal(2)
    tilt, scale = 0.04 * shot.standard_normal(), shot.uniform(0.92, 1.04)
    t = (np.arange(size) + 0.5) / size * 2 - 1                  # pixel centres in [-1, 1]
    x0, y0 = t[None, :] - dx, t[:, None] - dy
    X = (x0 * np.cos(tilt) + y0 * np.sin(tilt)) / scale
    Y = (-x0 * np.sin(tilt) + y0 * np.cos(tilt)) / scale + 0.02
    lungs = _lungs(X, Y, an)
    D, parts = _normal_chest(X, Y, an, lungs, sex, shot)
    for f in FINDINGS:
        if f in findings and f in OVERLAYS:
            D = D + OVERLAYS[f](X, Y, an, lungs, parts, own(f))
    # film: unsharpness, exposure curve, quantum noise
    D = gaussian_filter(D, 0.0025 * size * shot.uniform(0.8, 1.6))
    film = 1 - np.exp(-shot.uniform(1.3, 1.8) * np.clip(D, 0, None))
    film = film ** shot.uniform(0.8, 1.25) * shot.uniform(0.85, 1.0) + shot.uniform(0.02, 0.1)
    noise = shot.uniform(0.008, 0.02) * (1.5 if view == "AP" else 1.0)
    film = film + noise * shot.standard_normal(film.shape)
    return np.clip(np.rint(film * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class _Row:
    patient: int
    follow_up: int
    findings: tuple[str, ...]
    age: int
    sex: str
    view: str

    @property
    def name(self) -> str:
        return f"{self.patient:08d}_{self.follow_up:03d}.png"

    @property
    def labels(self) -> str:
        return "|".join(sorted(self.findings)) or NO_FINDING


def _plan(n: int, seed: int) -> list[_Row]:
    """n images from patients with 1, 2, 3 ... visits (2.5 on average; CXR14 has 3.6)."""
    rng = np.random.default_rng([seed, 0])
    rows, patient = [], 0
    while len(rows) < n:
        patient += 1
        visits = min(int(rng.geometric(0.4)), n - len(rows))
        age, sex = int(np.clip(rng.normal(47, 17), 1, 90)), "M" if rng.random() < P_MALE else "F"
        for k in range(visits):
            view = "PA" if rng.random() < P_PA else "AP"
            rows.append(_Row(patient, k, sample_findings(rng), age + k // 3, sex, view))
    return rows


def write_phantom(out: str | Path, n: int = 512, size: int = 256, seed: int = 0,
                  progress: bool = True) -> Path:
    """Write n phantom images in the official CXR14 layout under `out`; returns `out`.

    `out` must be absent, empty, or an earlier phantom (which is replaced). Everything is written
    into a temporary sibling folder first and renamed into place at the end, so an interrupted
    run leaves no half-written dataset. Same arguments, same bytes.
    """
    if int(n) != n or n < 1:
        raise CxrnbError(f"phantom n={n}: the number of images must be an integer >= 1")
    if int(size) != size or size < 32:
        raise CxrnbError(f"phantom size={size}: images must be at least 32 pixels wide")
    if int(seed) != seed or seed < 0:
        raise CxrnbError(f"phantom seed={seed}: use a non-negative integer")
    n, size, seed, out = int(n), int(size), int(seed), Path(out)
    ours = out.is_dir() and (not any(out.iterdir()) or (out / "PHANTOM").is_file())
    if out.exists() and not ours:
        raise CxrnbError(f"{out} exists and is not a phantom: choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "images").mkdir(parents=True)
        rows = _plan(n, seed)
        for r in tqdm(rows, desc="phantom", unit="img", disable=not progress):
            img = draw_chest(r.findings, size, seed, r.patient, r.follow_up, r.view, r.sex)
            Image.fromarray(img).save(tmp / "images" / r.name)
        spacing = f"{FIELD_OF_VIEW_MM / size:.6g}"
        with open(tmp / "Data_Entry_2017.csv", "w", newline="") as fh:
            fh.write(HEADER + "\n")
            w = csv.writer(fh, lineterminator="\n")
            for r in rows:
                w.writerow([r.name, r.labels, r.follow_up, r.patient, r.age, r.sex, r.view,
                            size, size, spacing, spacing])
        (tmp / "PHANTOM").write_text(
            f"Synthetic chest-like phantom drawn by cxrnb.data.phantom (n={n}, size={size}, "
            f"seed={seed}): not real radiographs; results from it are labelled "
            "'synthetic phantom'.\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
