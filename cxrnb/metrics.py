"""Sample-quality metrics for what the paper only judged by eye.

- Fréchet distance (FID when the features are Inception's) and KID: how far the generated feature
  distribution is from the real one (lower is better; KID is unbiased, so usable at small n);
- precision and recall (Kynkäänniemi et al., 2019): fidelity and coverage separately;
- MS-SSIM diversity: mean similarity of random pairs within a set (lower = more diverse; a collapsed
  GAN scores high), compared with the same number on real images;
- memorisation: is a generated image closer to a training image than real unseen images are?

``evaluate`` runs them all in every available feature space with repeated random subsets, so each
number carries its spread. Features are (N, D) arrays (numpy or torch); images are (N, 1, H, W)
floats in [0, 1] or uint8 cache arrays (see ``cxrnb.features.as_unit_images``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from tqdm.auto import tqdm

from cxrnb.errors import CxrnbError
from cxrnb.features import FeatureExtractor, as_unit_images


def _f64(x) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(np.float64)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix (round-off negatives clipped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½).

    Tr (S1 S2)^½ = Tr (S1^½ S2 S1^½)^½ (similar matrices share eigenvalues), and S1^½ S2 S1^½ is
    symmetric positive semi-definite, so its eigenvalues are real and >= 0 up to round-off. This
    avoids ``scipy.linalg.sqrtm`` of the non-symmetric S1 S2, its complex parts and its failures on
    singular covariances (fewer images than feature dimensions).
    """
    mu1, mu2, s1, s2 = map(_f64, (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise CxrnbError(f"Fréchet distance needs means (D,) and covariances (D, D) of one D; got "
                         f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    r = _sqrt_psd(s1)
    m = r @ s2 @ r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _check_features(f1, f2, at_least: int = 2) -> tuple[np.ndarray, np.ndarray]:
    f1, f2 = _f64(f1), _f64(f2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise CxrnbError(f"features must be (N, D) with one D, got {f1.shape} and {f2.shape}")
    if min(len(f1), len(f2)) < at_least:
        raise CxrnbError(f"need at least {at_least} feature vectors per set, "
                         f"got {len(f1)} and {len(f2)}")
    return f1, f2


def frechet_from_features(f1, f2) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (unbiased covariances, as FID)."""
    f1, f2 = _check_features(f1, f2)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """KID's cubic polynomial kernel (x·y / D + 1)³ (Bińkowski et al., 2018)."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def _mmd2_unbiased(kxx: Tensor, kxy: Tensor, kyy: Tensor) -> Tensor:
    m = len(kxx)
    off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return off - 2 * kxy.mean()


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² under the cubic polynomial kernel, averaged over
    ``subsets`` random subsets of ``subset_size`` from each set. Returns (mean, std) over subsets."""
    f1, f2 = map(torch.from_numpy, _check_features(f1, f2))
    if not 2 <= subset_size <= min(len(f1), len(f2)):
        raise CxrnbError(f"KID subset_size {subset_size} must be between 2 and the smaller set "
                         f"({min(len(f1), len(f2))})")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        a = f1[torch.randperm(len(f1), generator=g)[:subset_size]]
        b = f2[torch.randperm(len(f2), generator=g)[:subset_size]]
        vals.append(_mmd2_unbiased(_poly_kernel(a, a), _poly_kernel(a, b), _poly_kernel(b, b)))
    vals = torch.stack(vals)
    return float(vals.mean()), float(vals.std(unbiased=False))


def _chunks(x, chunk: int):
    """(start, float32 (c, D) rows) of a feature array or an image array (flattened, uint8 / 255)."""
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk]
        yield i, (as_unit_images(part).flatten(1) if part.ndim > 2
                  else torch.as_tensor(np.asarray(part), dtype=torch.float32))


def nearest(a, b, chunk: int = 512, progress: bool = False) -> tuple[Tensor, Tensor]:
    """For each row of ``a``, the L2 distance to and index of its nearest row of ``b``; chunked over
    both so that neither the (|a|, |b|) matrix nor ``b`` as floats has to fit in memory at once."""
    dists, idxs = [], []
    bar = tqdm(total=len(a), desc="nearest training image", disable=not progress)
    for _, qa in _chunks(a, chunk):
        best_d = torch.full((len(qa),), float("inf"))
        best_i = torch.zeros(len(qa), dtype=torch.long)
        for j, rb in _chunks(b, chunk):
            d, i = torch.cdist(qa, rb).min(1)
            better = d < best_d
            best_d, best_i = torch.where(better, d, best_d), torch.where(better, i + j, best_i)
        dists.append(best_d)
        idxs.append(best_i)
        bar.update(len(qa))
    bar.close()
    return torch.cat(dists), torch.cat(idxs)


def _kth_radii(f: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each row of f to its k-th nearest other row (the point itself is at 0)."""
    return torch.cat([torch.cdist(f[i:i + chunk], f).topk(k + 1, largest=False).values[:, k]
                      for i in range(0, len(f), chunk)])


def _covered(q: Tensor, ref: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """Whether each row of q lies inside at least one ball (ref[j], radii[j])."""
    return torch.cat([(torch.cdist(q[i:i + chunk], ref) <= radii).any(1)
                      for i in range(0, len(q), chunk)])


def precision_recall(real_f, fake_f, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Each set's manifold is the union of balls around its points with radius the distance to the
    k-th nearest neighbour (k = 3 as in the paper). Precision: fraction of generated points inside
    the real manifold (fidelity). Recall: fraction of real points inside the generated one (coverage).
    """
    real, fake = map(torch.from_numpy, _check_features(real_f, fake_f, at_least=k + 1))
    precision = _covered(fake, real, _kth_radii(real, k, chunk), chunk).double().mean()
    recall = _covered(real, fake, _kth_radii(fake, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


# MS-SSIM at 32-128 px: torchmetrics needs side // (scales - 1)² > kernel - 1. Wang et al.'s five
# scales with an 11-px Gaussian need >= 160 px, so we keep its sigma 1.5 on a 7-px window (±2σ) and
# its first three scales (full, 1/2, 1/4 resolution), their weights renormalised to sum to 1:
# valid from 28 px up, and one definition for every image size this project uses.
MS_SSIM_KERNEL = 7
MS_SSIM_BETAS = tuple(b / sum((0.0448, 0.2856, 0.3001)) for b in (0.0448, 0.2856, 0.3001))


def ms_ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-pair MS-SSIM of two (P, 1, H, W) batches in [0, 1] (settings above)."""
    if min(a.shape[-2:]) < 28:
        raise CxrnbError(f"MS-SSIM here needs images of at least 28 px, got {tuple(a.shape[-2:])}")
    return multiscale_structural_similarity_index_measure(
        a, b, kernel_size=MS_SSIM_KERNEL, sigma=1.5, betas=MS_SSIM_BETAS, data_range=1.0,
        reduction="none")


def ms_ssim_diversity(images, pairs: int = 200, seed: int = 0, batch: int = 100) -> float:
    """Mean MS-SSIM over ``pairs`` random pairs of distinct images of one set: lower = more diverse.
    Meaningful beside the same number for real images of the same size (``evaluate`` reports both)."""
    n = len(images)
    if n < 2:
        raise CxrnbError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=g)
    j = (i + torch.randint(1, n, (pairs,), generator=g)) % n      # uniform over the others
    vals = [ms_ssim(as_unit_images(images[i[s:s + batch].numpy()]),
                    as_unit_images(images[j[s:s + batch].numpy()])) for s in range(0, pairs, batch)]
    return float(torch.cat(vals).mean())


@dataclass
class Memorisation:
    """Nearest-training-image distances of generated images beside those of real unseen images."""

    space: str                 # "pixel" (RMS grey-level difference) or "feature"
    gen_dist: np.ndarray       # per generated image: distance to its nearest training image
    gen_nearest: np.ndarray    # ... and that image's index in the training set
    test_dist: np.ndarray      # per real test image: distance to its nearest training image
    quantile: float
    threshold: float           # the ``quantile`` of test_dist
    fraction_below: float      # generated images closer than threshold (≈ quantile if not copying)

    def closest(self, n: int = 8) -> pd.DataFrame:
        """The n generated images closest to a training image: indices and distance, for a figure."""
        order = np.argsort(self.gen_dist)[:n]
        return pd.DataFrame({"generated": order, "train": self.gen_nearest[order],
                             "distance": self.gen_dist[order]})


def _memorisation(space: str, gen, train, test, quantile: float, chunk: int, scale: float,
                  progress: bool) -> Memorisation:
    gd, gi = nearest(gen, train, chunk, progress)
    td, _ = nearest(test, train, chunk, progress)
    gd, td = gd.numpy() / scale, td.numpy() / scale
    thr = float(np.quantile(td, quantile))
    return Memorisation(space, gd, gi.numpy(), td, quantile, thr, float((gd < thr).mean()))


def memorisation(generated, train, test, feature_fn: Callable | None = None, quantile: float = 0.05,
                 chunk: int = 512, progress: bool = True) -> dict[str, Memorisation]:
    """Does the model copy its training images?

    For every generated image, the nearest training image by pixel distance (RMS grey-level
    difference, L2 / sqrt(pixels)) and, with ``feature_fn``, by feature L2. The baseline is the same
    distance for real TEST images (other patients): a generator that makes new images like them puts
    about ``quantile`` (5 %) of its samples below the test set's 5th percentile; far more than that
    means samples sit unusually close to particular training images.
    """
    shapes = {tuple(as_unit_images(x[:1]).shape[1:]) for x in (generated, train, test)}
    if len(shapes) != 1:
        raise CxrnbError(f"generated, train and test images must share one shape, "
                         f"got {sorted(shapes)}")
    (c, h, w), = shapes
    out = {"pixel": _memorisation("pixel", generated, train, test, quantile, chunk,
                                  (c * h * w) ** 0.5, progress)}
    if feature_fn is not None:
        feats = [torch.cat([feature_fn(x[i:i + chunk]) for i in range(0, len(x), chunk)])
                 for x in (generated, train, test)]
        out["feature"] = _memorisation("feature", *feats, quantile, chunk, 1.0, progress)
    return out


REAL = "real (held-out)"   # the reference row: a second real subset scored like a model


def evaluate(real_test, generated, extractors: Sequence[FeatureExtractor], n_repeats: int = 5,
             subset_size: int | None = None, seed: int = 0, k: int = 3, kid_subsets: int = 50,
             kid_subset_size: int = 1000, ms_ssim_pairs: int = 200, train=None,
             quantile: float = 0.05, progress: bool = True) -> pd.DataFrame:
    """Every metric in every available feature space, mean ± std over ``n_repeats`` random subsets.

    ``generated`` is one image set or a mapping {model name: images}. Each repeat draws two disjoint
    real subsets A and B of ``subset_size`` (default: half the real set, capped by the smallest
    generated set) and one of each generated set: every model is scored against A, and B is scored
    against A as the row ``"real (held-out)"`` — the value a perfect generator would get at this n.
    With ``train`` images, metric "memorised" (pixel space) is the fraction of a subset closer to
    its nearest training image than the ``quantile`` of A's distances (see ``memorisation``).

    Returns long-form rows: model, space, metric, mean, std, n_real, n_generated, n_repeats, note.
    An unavailable feature space gets one row with its reason in ``note`` and no numbers.
    """
    models = dict(generated) if isinstance(generated, Mapping) else {"generated": generated}
    n_real = len(real_test)
    s = subset_size or min([n_real // 2] + [len(x) for x in models.values()])
    if s < k + 2 or 2 * s > n_real or any(len(x) < s for x in models.values()):
        raise CxrnbError(f"subset_size {s} needs 2 x {s} real images (have {n_real}), as many per "
                         f"model (have {min(len(x) for x in models.values())}) and > k + 1 = {k + 1}")
    sets = {REAL: real_test, **models}
    rng = np.random.default_rng(seed)
    draws = [{name: rng.permutation(len(x)) for name, x in sets.items()} for _ in range(n_repeats)]

    def pick(name: str, r: int) -> np.ndarray:
        """Repeat r's subset of a set; A is the first s of the real permutation, B the next s."""
        return draws[r][name][s:2 * s] if name == REAL else draws[r][name][:s]

    def ref(r: int) -> np.ndarray:
        return draws[r][REAL][:s]

    rows, scores = [], {}  # scores[(model, space, metric)] = list over repeats
    for ext in extractors:
        if not ext.available:
            rows.append({"model": "", "space": ext.name, "metric": "", "note": ext.status()})
            continue
        feats = {name: ext(x, progress).double() for name, x in sets.items()}
        for r in range(n_repeats):
            fa = feats[REAL][ref(r)]
            for name in sets:
                fb = feats[name][pick(name, r)]
                p, rc = precision_recall(fa, fb, k)
                m = {"FID": frechet_from_features(fa, fb),
                     "KID": kid(fa, fb, kid_subsets, min(kid_subset_size, s), seed + r)[0],
                     "precision": p, "recall": rc}
                for metric, v in m.items():
                    scores.setdefault((name, ext.name, metric), []).append(v)
    for r in tqdm(range(n_repeats), desc="MS-SSIM diversity", disable=not progress):
        for name, x in sets.items():
            v = ms_ssim_diversity(as_unit_images(x[np.sort(pick(name, r))]), ms_ssim_pairs, seed + r)
            scores.setdefault((name, "pixel", "MS-SSIM"), []).append(v)
    if train is not None:
        dist = {name: nearest(x, train)[0].numpy() for name, x in
                tqdm(sets.items(), desc="memorisation", disable=not progress)}
        for r in range(n_repeats):
            threshold = np.quantile(dist[REAL][ref(r)], quantile)
            for name in sets:
                v = float((dist[name][pick(name, r)] < threshold).mean())
                scores.setdefault((name, "pixel", "memorised"), []).append(v)
    for (name, space, metric), vals in scores.items():
        rows.append({"model": name, "space": space, "metric": metric, "mean": float(np.mean(vals)),
                     "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan, "note": ""})
    df = pd.DataFrame(rows, columns=["model", "space", "metric", "mean", "std", "note"])
    df["n_real"], df["n_generated"], df["n_repeats"] = s, s, n_repeats
    return df
