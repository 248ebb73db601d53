"""An offline stand-in for CXR14: procedurally drawn chest-like radiographs with visible labels.

Why: tests, CI and first runs of every notebook need images in the official layout, with the real
label vocabulary and frequencies, on machines that cannot fetch 42 GB from NIH. The phantom is
written exactly like the release (``images/<patient>_<follow-up>.png`` + ``Data_Entry_2017.csv``),
so the normal loader reads it; a ``PHANTOM`` marker file makes every result from it say
"synthetic phantom". Each finding changes the picture where a radiologist would look (a larger
heart for Cardiomegaly, an opaque base for Effusion, ...), so a classifier or a conditional
generator has something real to learn. It is a caricature, not a radiograph.

This module draws each image's labels and writes the data set; the chest itself is drawn as a
density map by ``cxrnb.data.anatomy`` (the healthy chest) and ``cxrnb.data.pathology`` (the
findings). The film shows 1 - exp(-D), blurred, with noise. Every image is a pure function of
(seed, patient, follow-up, findings, view, sex), so a CSV row re-draws its own image exactly.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from cxrnb.data.anatomy import lung_fields, normal_chest, sample_anatomy
from cxrnb.data.pathology import OVERLAYS, reshape
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
    iteration -- makes that exactly p_i, and the mean count per abnormal image, sum(p_i), is
    CXR14's.
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


def _check_chest(findings: set[str], view: str, sex: str) -> None:
    if findings - set(FINDINGS):
        raise CxrnbError(f"unknown finding(s) {sorted(findings - set(FINDINGS))}; "
                         f"choose from {', '.join(FINDINGS)}")
    if view not in VIEWS or sex not in ("M", "F"):
        raise CxrnbError(f"view={view!r}, sex={sex!r}: use view 'PA' or 'AP' and sex 'M' or 'F'")


def _positioned_grid(size: int, shot: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The pixel centres in the patient's coordinates: shift, slight rotation, and how much of the
    frame the chest fills."""
    dx, dy = 0.03 * shot.standard_normal(2)
    tilt, scale = 0.04 * shot.standard_normal(), shot.uniform(0.92, 1.04)
    t = (np.arange(size) + 0.5) / size * 2 - 1                  # pixel centres in [-1, 1]
    x0, y0 = t[None, :] - dx, t[:, None] - dy
    X = (x0 * np.cos(tilt) + y0 * np.sin(tilt)) / scale
    Y = (-x0 * np.sin(tilt) + y0 * np.cos(tilt)) / scale + 0.02
    return X, Y


def _film(D: np.ndarray, size: int, view: str, shot: np.random.Generator) -> np.ndarray:
    """Density to a uint8 film: unsharpness, exposure curve, quantum noise (more on a portable AP)."""
    D = gaussian_filter(D, 0.0025 * size * shot.uniform(0.8, 1.6))
    film = 1 - np.exp(-shot.uniform(1.3, 1.8) * np.clip(D, 0, None))
    film = film ** shot.uniform(0.8, 1.25) * shot.uniform(0.85, 1.0) + shot.uniform(0.02, 0.1)
    noise = shot.uniform(0.008, 0.02) * (1.5 if view == "AP" else 1.0)
    film = film + noise * shot.standard_normal(film.shape)
    return np.clip(np.rint(film * 255), 0, 255).astype(np.uint8)


def draw_chest(findings: Iterable[str] = (), size: int = 256, seed: int = 0, patient: int = 1,
               follow_up: int = 0, view: str = "PA", sex: str = "M") -> np.ndarray:
    """One phantom radiograph, uint8 (size, size).

    The patient's anatomy depends on (seed, patient) only and the positioning, exposure and noise
    on (seed, patient, follow_up); each finding draws from a generator of its own. So the same
    call with and without a finding shows the same chest, differing only by that finding.
    """
    findings = set(findings)
    _check_chest(findings, view, sex)
    shot = np.random.default_rng([seed, patient, follow_up])

    def own(f: str) -> np.random.Generator:
        return np.random.default_rng([seed, patient, follow_up, 1 + FINDINGS.index(f)])

    an = reshape(sample_anatomy(np.random.default_rng([seed, patient])), findings, view, own)
    X, Y = _positioned_grid(size, shot)
    lungs = lung_fields(X, Y, an)
    D, parts = normal_chest(X, Y, an, lungs, sex, shot)
    for f in FINDINGS:
        if f in findings and f in OVERLAYS:
            D = D + OVERLAYS[f](X, Y, an, lungs, parts, own(f))
    return _film(D, size, view, shot)


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


def _check_arguments(n, size, seed) -> None:
    if int(n) != n or n < 1:
        raise CxrnbError(f"phantom n={n}: the number of images must be an integer >= 1")
    if int(size) != size or size < 32:
        raise CxrnbError(f"phantom size={size}: images must be at least 32 pixels wide")
    if int(seed) != seed or seed < 0:
        raise CxrnbError(f"phantom seed={seed}: use a non-negative integer")


def _write_into(folder: Path, n: int, size: int, seed: int, progress: bool) -> None:
    """The images, the label table and the PHANTOM marker, into an empty ``folder``."""
    (folder / "images").mkdir(parents=True)
    rows = _plan(n, seed)
    for r in tqdm(rows, desc="phantom", unit="img", disable=not progress):
        img = draw_chest(r.findings, size, seed, r.patient, r.follow_up, r.view, r.sex)
        Image.fromarray(img).save(folder / "images" / r.name)
    spacing = f"{FIELD_OF_VIEW_MM / size:.6g}"
    with open(folder / "Data_Entry_2017.csv", "w", newline="") as fh:
        fh.write(HEADER + "\n")
        w = csv.writer(fh, lineterminator="\n")
        for r in rows:
            w.writerow([r.name, r.labels, r.follow_up, r.patient, r.age, r.sex, r.view,
                        size, size, spacing, spacing])
    (folder / "PHANTOM").write_text(
        f"Synthetic chest-like phantom drawn by cxrnb.data.phantom (n={n}, size={size}, "
        f"seed={seed}): not real radiographs; results from it are labelled "
        "'synthetic phantom'.\n")


def write_phantom(out: str | Path, n: int = 512, size: int = 256, seed: int = 0,
                  progress: bool = True) -> Path:
    """Write n phantom images in the official CXR14 layout under `out`; returns `out`.

    `out` must be absent, empty, or an earlier phantom (which is replaced). Everything is written
    into a temporary sibling folder first and renamed into place at the end, so an interrupted
    run leaves no half-written dataset. Same arguments, same bytes.
    """
    _check_arguments(n, size, seed)
    n, size, seed, out = int(n), int(size), int(seed), Path(out)
    ours = out.is_dir() and (not any(out.iterdir()) or (out / "PHANTOM").is_file())
    if out.exists() and not ours:
        raise CxrnbError(f"{out} exists and is not a phantom: choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_into(tmp, n, size, seed, progress)
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
