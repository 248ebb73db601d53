"""Do synthetic images help a classifier? The augmentation experiment the paper names as future work.

One classifier per training regime (``Regime``) and seed, each trained for the same number of
gradient steps, scored by test AUROC on real images; the controls (real images duplicated, blank
images carrying real labels) are what tell an effect of the synthetic images from one of more
images or of the labels alone.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images, noisy
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.classifier import ClassifierConfig, auroc_per_finding, checked, fit_classifier, total_steps


class Regime(StrEnum):
    """The training sets ``usefulness`` compares, in the order it trains them."""

    REAL = "real"
    MIXED = "real+synthetic"                        # the question
    DUPLICATED = "real+real (duplicated)"           # control: more images, no new information
    SYNTHETIC = "synthetic"
    BLANK = "blank (mean grey + noise)"             # control: the labels without the images


REGIMES = tuple(Regime)
BLANK_NOISE = 0.1   # std of the blank images' noise (grey levels in [0, 1])


def training_sets(xr: Tensor, yr: Tensor, xs: Tensor, ys: Tensor,
                  seed: int) -> dict[Regime, tuple[Tensor, Tensor, str]]:
    """Each regime's (images, labels, the set in words), from checked real and synthetic sets; the
    blank images' noise is drawn from a generator seeded with ``seed``."""
    real_u = as_unit_images(xr)
    g = torch.Generator().manual_seed(seed)
    blank = noisy(torch.full_like(real_u, float(real_u.mean())), BLANK_NOISE, g)
    return {Regime.REAL: (xr, yr, f"{len(xr):,} real"),
            Regime.MIXED: (torch.cat([real_u, as_unit_images(xs)]), torch.cat([yr, ys]),
                           f"{len(xr):,} real + {len(xs):,} synthetic"),
            Regime.DUPLICATED: (torch.cat([real_u, real_u]), torch.cat([yr, yr]),
                                f"{len(xr):,} real, each twice"),
            Regime.SYNTHETIC: (xs, ys, f"{len(xs):,} synthetic"),
            Regime.BLANK: (blank, yr, f"{len(xr):,} blank, real labels")}


def seed_aurocs(regime: Regime, x: Tensor, y: Tensor, test: tuple[Tensor, Tensor], seeds,
                cfg: ClassifierConfig, device: str | torch.device, progress: bool) -> list[dict]:
    """Test AUROC per finding and "macro" of one classifier per seed trained on (x, y) with ``cfg``'s
    step count: one row per (seed, finding)."""
    rows = []
    for seed in tqdm(seeds, desc=f"usefulness: {regime}", disable=not progress):
        clf = fit_classifier(x, y, replace(cfg, seed=seed), device=device, progress=False)
        auc = auroc_per_finding(clf, *test)
        auc["macro"] = auc.mean()
        rows += [{"regime": regime, "seed": seed, "finding": f, "auroc": a} for f, a in auc.items()]
    return rows


def usefulness(train_real, train_labels, synth, synth_labels, test, test_labels,
               seeds=(0, 1, 2), cfg: ClassifierConfig | None = None,
               device: str | torch.device = "cpu", progress: bool = True) -> pd.DataFrame:
    """Do synthetic images help a classifier? Test AUROC on real images, mean ± std over ``seeds``,
    after training on each of REGIMES, every one for the same number of gradient steps
    (``cfg.epochs`` epochs of the real set), so more data never means more training:

    - real; real + synthetic (the question); synthetic only;
    - controls that can fail: real + the real images once more (the mixed set's size without new
      information: what "more images" alone does at equal steps), and blank images at the real
      set's mean grey level carrying the real labels (a classifier that learns nothing from pixels:
      its test AUROC must be chance, ≈ 0.5; more would mean the labels leak). The blank images
      carry Gaussian noise (BLANK_NOISE): perfectly constant ones drive BatchNorm's running
      variance to 0, which then amplifies every test image into a fixed function of its
      brightness, and the control would measure that artefact instead of the data (it did, on the
      phantom: well above chance from constant images).

    ``synth_labels`` are the labels the synthetic images were generated for (conditional models);
    for an unconditional generator they must come from elsewhere, which the caller should state.
    Returns one row per (regime, finding), the findings plus "macro" (mean over the findings with an
    AUROC), with columns mean, std, n_seeds, the training set in words, its size and the steps.
    """
    cfg = cfg or ClassifierConfig()
    xr, yr = checked(train_real, train_labels)
    xs, ys = checked(synth, synth_labels)
    xt, yt = checked(test, test_labels)
    if xr.shape[-2:] != xs.shape[-2:] or xr.shape[-2:] != xt.shape[-2:]:
        raise CxrnbError(f"image sizes differ: real {tuple(xr.shape[-2:])}, synthetic "
                         f"{tuple(xs.shape[-2:])}, test {tuple(xt.shape[-2:])}; resize to one size")
    steps = total_steps(cfg, len(xr))
    data = training_sets(xr, yr, xs, ys, cfg.seed)
    rows, sizes = [], {}
    for regime in REGIMES:
        x, y, words = data[regime]
        sizes[regime] = (words, len(x))
        rows += seed_aurocs(regime, x, y, (xt, yt), seeds, replace(cfg, steps=steps), device, progress)
    out = (pd.DataFrame(rows).groupby(["regime", "finding"], sort=False)["auroc"]
           .agg(mean="mean", std="std", n_seeds="count").reset_index())
    out["training set"] = out.regime.map(lambda r: sizes[r][0])
    out["n_train"] = out.regime.map(lambda r: sizes[r][1])
    out["steps"] = steps
    out["n_test"] = len(xt)
    return out
