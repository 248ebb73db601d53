"""The phantom's healthy chest: a patient's geometry and the density a normal chest adds to a film.

Drawing model: an X-ray records how much matter a ray crossed, so each structure adds (bone,
heart, fluid) or removes (air in the lungs) "density" D on a grid of normalised coordinates
x, y in [-1, 1] (y points down; the patient's left is the image's right, as in a PA film).
``cxrnb.data.phantom`` turns D into a film; ``cxrnb.data.pathology`` adds the findings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates


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
    def j(s: float) -> float:           # relative jitter
        return 1.0 + s * rng.standard_normal()

    def d(s: float) -> float:           # absolute jitter
        return s * rng.standard_normal()

    a = Anatomy()
    return Anatomy(
        lung_x=a.lung_x * j(0.04), lung_w=a.lung_w * j(0.06), lung_top=a.lung_top + d(0.03),
        dome=(a.dome[0] + d(0.03), a.dome[1] + d(0.03)), dome_curve=a.dome_curve * j(0.15),
        heart_x=a.heart_x + d(0.02), heart_y=a.heart_y * j(0.05), heart_w=a.heart_w * j(0.06),
        heart_h=a.heart_h * j(0.06), thorax_w=a.thorax_w * j(0.04), air=a.air * j(0.08),
        soft=a.soft * j(0.10), bone=a.bone * j(0.12), markings=a.markings * j(0.2),
        rib_pitch=a.rib_pitch * j(0.05), rib_phase=d(0.03))


def step(z: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 step; `z` is a signed distance divided by the edge width."""
    return 0.5 * (1.0 + np.tanh(z))


EDGE = 0.012        # softness of organ outlines, in normalised units (1.5 px at 256 px)


@dataclass
class Lung:
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


def lung_fields(X: np.ndarray, Y: np.ndarray, an: Anatomy) -> list[Lung]:
    """Both lungs on the pixel grid: image left (patient right) first."""
    lungs = []
    for side in (-1, 1):
        xc = side * an.lung_x
        half = _lung_half(an, Y)
        bottom = an.dome[side > 0] + an.dome_curve * ((X - xc + side * 0.05) / an.lung_w) ** 2
        mask = (step((half - np.abs(X - xc)) / EDGE) * step((bottom - Y) / EDGE)
                * step((Y - an.lung_top) / EDGE))
        lungs.append(Lung(side, xc, half, bottom, mask, side * (X - xc) / half))
    return lungs


def _radial_markings(X, Y, hx, hy, rng) -> np.ndarray:
    """Vessels fanning out of a hilum: zero-crossings of noise that is smooth along the radius
    and rough across it, sampled in polar coordinates around (hx, hy)."""
    field = gaussian_filter(rng.standard_normal((240, 48)), (1.0, 5.0), mode=("wrap", "nearest"))
    field /= field.std()
    r, theta = np.hypot(X - hx, Y - hy), np.arctan2(Y - hy, X - hx)
    coords = np.stack([(theta + np.pi) / (2 * np.pi) * 240, np.clip(r, 0, 1) * 47])
    ridge = np.exp(-(map_coordinates(field, coords, order=1, mode="grid-wrap") / 0.3) ** 2)
    return ridge * np.exp(-r / 0.45) * step((r - 0.04) / 0.02)


# Each block below adds its structures to the density D in turn (the order of the additions is
# part of the picture: floating-point sums in another order would change some pixels).
def _body(X, Y, an: Anatomy, below, ax) -> np.ndarray:
    """Soft tissue: neck and shoulders, arms, and the abdomen below the diaphragm."""
    torso = an.thorax_w * (0.5 + 0.5 * step((Y + 0.9) / 0.06))           # neck, then shoulders
    D = an.soft * step((torso - ax) / 0.02) * (0.85 + 0.3 * (1 - (X / an.thorax_w) ** 2).clip(0))
    arms = step((0.09 - np.abs(ax - an.thorax_w - 0.13)) / 0.02) * step((Y + 0.8) / 0.08)
    D = D + 0.8 * an.soft * arms
    return D + 0.3 * step((Y - below) / 0.02) * step((an.lung_x + an.lung_w - ax) / 0.05)  # abdomen


def _aerated(D, X, Y, an: Anatomy, lungs: list[Lung], rng) -> tuple[np.ndarray, np.ndarray]:
    """The air in the lungs (less towards the bases) and their vascular markings."""
    markings = 0.0
    for lung in lungs:
        base = 1 - 0.3 * np.clip((Y - an.lung_top) / (an.dome[lung.side > 0] - an.lung_top), 0, 1)
        D = D - an.air * lung.mask * base
        vessels = _radial_markings(X, Y, lung.side * 0.14, -0.05, rng)
        markings = markings + an.markings * vessels * lung.mask
    return D + markings, markings


def _mediastinum(D, X, Y, an: Anatomy, below, ax) -> np.ndarray:
    """Mediastinum with trachea and aortic knob, the heart on the diaphragm, the hilar vessels."""
    D = D + 0.5 * step((0.1 + 0.04 * (Y + 1) - ax) / EDGE) * step((an.heart_y - Y) / 0.1)
    D = D - 0.2 * step((0.022 - ax) / 0.006) * step((-0.15 - Y) / 0.02)
    D = D + 0.3 * step((0.055 - np.hypot(X - 0.11, Y + 0.3)) / EDGE)
    hx, hy = X - an.heart_x, Y - an.heart_y          # heart: a tilted ellipse on the diaphragm
    q = np.hypot((hx * np.cos(0.3) + hy * np.sin(0.3)) / an.heart_w,
                 (hy * np.cos(0.3) - hx * np.sin(0.3)) / an.heart_h)
    D = D + 0.6 * step((1 - q) * an.heart_h / EDGE) * step((below + 0.03 - Y) / 0.03)
    for side in (-1, 1):                                    # hilar vessels
        D = D + 0.2 * np.exp(-((X - side * 0.17) / 0.06) ** 2 - ((Y + 0.03) / 0.13) ** 2)
    return D


def _bones(D, X, Y, an: Anatomy, ax, px) -> np.ndarray:
    """Spine with disc spaces, posterior and faint anterior ribs, clavicles."""
    disc = np.exp(-((np.mod(Y / 0.09, 1.0) - 0.5) / 0.1) ** 2)
    D = D + an.bone * 0.45 * step((0.055 - ax) / 0.01) * (1 - 0.5 * disc)
    ribs = 0.0
    posterior = 0.5 * ax**2 + 1.5 * np.clip(ax - 0.5, 0, None) ** 2
    for shape, weight, lo in ((posterior, 1.0, 0.05), (0.35 * (0.75 - ax), 0.4, 0.25)):
        phase = (Y - shape - an.lung_top + 0.04 - an.rib_phase) / an.rib_pitch
        frac = np.abs(np.mod(phase, 1.0) - 0.5) * an.rib_pitch       # distance from a rib's axis
        half = 0.2 * an.rib_pitch
        edge = max(0.006, px)
        rib = 0.6 * step((half - frac) / edge) + 0.6 * np.exp(-((frac - half) / edge) ** 2)
        inside = ((phase > 0) & (phase < 10)) * step((ax - lo) / 0.03)
        ribs = ribs + weight * rib * inside * step((an.lung_x + an.lung_w + 0.05 - ax) / 0.03)
    D = D + 0.3 * an.bone * ribs
    clav_y = an.lung_top + 0.1 - 0.22 * (ax - 0.08) + 0.03 * np.sin(np.pi * (ax - 0.08) / 0.5)
    clavicles = (np.exp(-((Y - clav_y) / 0.024) ** 4) * step((ax - 0.07) / 0.01)
                 * step((0.62 - ax) / 0.02))
    return D + 0.8 * an.bone * clavicles


def normal_chest(X, Y, an: Anatomy, lungs: list[Lung], sex: str, rng) -> tuple[np.ndarray, dict]:
    """Density of a healthy chest: body and arms, lungs with vessels, mediastinum, heart, bones.

    Also returns the parts an overlay needs: the vascular markings (a pneumothorax removes them)
    and the pixel pitch ``px``, the thinnest line the grid can draw."""
    ax, px = np.abs(X), 2.0 / X.shape[1]
    below = np.where(X < 0, lungs[0].bottom, lungs[1].bottom)           # the diaphragm
    D = _body(X, Y, an, below, ax)
    D, markings = _aerated(D, X, Y, an, lungs, rng)
    D = _mediastinum(D, X, Y, an, below, ax)
    D = D - 0.3 * step((0.07 - np.hypot((X - 0.33) * 0.8, Y - an.dome[1] - 0.12)) / EDGE)  # stomach gas
    if sex == "F":      # breast shadows over the lower lateral zones
        for side in (-1, 1):
            D = D + 0.14 * step((0.32 - np.hypot(X - side * 0.45, (Y - 0.32) * 1.3)) / 0.03)
    D = _bones(D, X, Y, an, ax, px)
    return D, {"markings": markings, "px": px}
