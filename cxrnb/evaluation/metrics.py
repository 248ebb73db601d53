"""Sample-quality metrics for what the paper only judged by eye.

- Fréchet distance "FD (space)", called FID only in Inception's space, and KID: how far the generated
  feature distribution is from the real one (lower is better; KID is unbiased, so usable at small n);
- FD∞ (Chong & Forsyth, 2020): FD is biased upwards by about c/n at n images, so it is measured at
  several n and extrapolated to 1/n → 0;
- precision and recall (Kynkäänniemi et al., 2019), density and coverage (Naeem et al., 2020):
  fidelity and coverage separately, the latter two robust to outliers in the real set;
- MS-SSIM diversity: mean similarity of random pairs within a set (lower = more diverse; a collapsed
  GAN scores high), compared with the same number on real images;
- memorisation: is a generated image closer to a training image than real unseen images are?
- blank frames: near-uniform generated images, counted against the real images' contrast.

These are the primitives; ``cxrnb.evaluation.evaluate`` runs them in every available feature space
on repeated random subsets, so each number carries its spread. Features are (N, D) arrays (numpy or
torch); images are (N, 1, H, W) floats in [0, 1] or uint8 cache arrays (see
``cxrnb.data.tensors.as_unit_images``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError


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


def effective_dimension(features) -> float:
    """Participation ratio (Σλ)² / Σλ² of the covariance eigenvalues λ: how many directions carry the
    variance (D for isotropic features, 1 when one direction holds it all). A 256-d space with an
    effective dimension of 3 compares images on about 3 numbers."""
    f = _f64(features)
    if f.ndim != 2 or len(f) < 2:
        raise CxrnbError(f"effective dimension needs (N >= 2, D) features, got {f.shape}")
    lam = np.clip(np.linalg.eigvalsh(np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])), 0, None)
    return float(lam.sum() ** 2 / (lam ** 2).sum()) if lam.any() else 0.0


def fd_infinity(f1, f2, ns: Sequence[int] | None = None, draws: int = 2, seed: int = 0) -> float:
    """FD∞ (Chong & Forsyth, 2020): the Fréchet distance expected with infinitely many images.

    FD at n images per set is biased upwards by about c / n. FD is measured on ``draws`` random
    subsets of each n in ``ns`` (default: 5 sizes from half the smaller set to all of it), a line
    FD = FD∞ + c / n is fitted by least squares, and its intercept at 1/n = 0 is returned. It can
    come out below 0 when the true distance is within the noise of the fit.
    """
    f1, f2 = _check_features(f1, f2)
    m = min(len(f1), len(f2))
    ns = sorted(set(int(n) for n in (ns if ns is not None else np.linspace(max(2, m // 2), m, 5))))
    if len(ns) < 2 or ns[0] < 2 or ns[-1] > m:
        raise CxrnbError(f"FD∞ needs at least 2 subset sizes between 2 and {m}, got {ns}")
    rng = np.random.default_rng(seed)
    inv, fd = [], []
    for n in ns:
        for _ in range(draws):
            fd.append(frechet_from_features(f1[rng.choice(len(f1), n, replace=False)],
                                            f2[rng.choice(len(f2), n, replace=False)]))
            inv.append(1.0 / n)
    slope, intercept = np.polyfit(inv, fd, 1)
    return float(intercept)


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


def density_coverage(real_f, fake_f, k: int = 5, chunk: int = 1024) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020), both from balls around the REAL points only.

    With B_i the ball around real point i of radius its distance to its k-th nearest real neighbour
    (k = 5 as in the paper): density = Σ_j #{i: fake_j in B_i} / (k M) over the M fake points
    (≈ 1 for a generator like the real data, > 1 when samples crowd dense regions); coverage =
    fraction of real points whose ball holds at least one fake point. Unlike recall, coverage does
    not grow with the fake set's own outliers.
    """
    real, fake = map(torch.from_numpy, _check_features(real_f, fake_f, at_least=1))
    if len(real) <= k:
        raise CxrnbError(f"density and coverage with k = {k} need more than {k} real points, "
                         f"got {len(real)}")
    radii = _kth_radii(real, k, chunk)
    inside = torch.cat([torch.cdist(fake[i:i + chunk], real) < radii
                        for i in range(0, len(fake), chunk)])          # (M, N): fake j in B_i
    return float(inside.sum() / (k * len(fake))), float(inside.any(0).double().mean())


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
    Meaningful beside the same number for real images of the same size (``evaluate.evaluate``
    reports both)."""
    n = len(images)
    if n < 2:
        raise CxrnbError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=g)
    j = (i + torch.randint(1, n, (pairs,), generator=g)) % n      # uniform over the others
    vals = [ms_ssim(as_unit_images(images[i[s:s + batch].numpy()]),
                    as_unit_images(images[j[s:s + batch].numpy()])) for s in range(0, pairs, batch)]
    return float(torch.cat(vals).mean())


BLANK_SHARE = 0.25     # a blank frame's pixel std is below this share of the real images' median


def blank_frames(images, real, share: float = BLANK_SHARE) -> tuple[int, float]:
    """(count, threshold): the images whose pixel standard deviation is below ``share`` of the
    median over ``real`` images, i.e. near-uniform frames with no anatomy (a sampler's draws that
    fell where the decoder was never trained). The scale comes from the real images, so it holds
    whatever their preprocessing."""
    std = lambda x: as_unit_images(x).flatten(1).std(1)           # noqa: E731
    threshold = share * float(std(real).median())
    return int((std(images) < threshold).sum()), threshold


class Space(StrEnum):
    """Where nearest training images are found: grey levels, or a feature extractor's space. PIXEL
    is also the space ``evaluate`` files its image-level metrics (MS-SSIM, memorised) under."""

    PIXEL = "pixel"            # RMS grey-level difference
    FEATURE = "feature"        # L2 between ``feature_fn`` vectors


@dataclass
class Memorisation:
    """Nearest-training-image distances of generated images beside those of real unseen images."""

    space: Space
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


def memorisation(generated, train, test, feature_fn: Callable | None = None, quantile: float = 0.05,
                 chunk: int = 512, progress: bool = True) -> dict:
    """Does the model copy its training images? The one place nearest training images are found.

    For every generated image, the nearest training image by pixel distance (RMS grey-level
    difference, L2 / sqrt(pixels)) and, with ``feature_fn``, by feature L2. The baseline is the same
    distance for real TEST images (other patients), and the one threshold is the ``quantile`` (5 %)
    of those test distances: a generator that makes new images like them puts about ``quantile``
    of its samples below it; far more means samples sit unusually close to particular training
    images. ``evaluate.evaluate(memorised=...)`` reports the same fractions per subset.

    ``generated`` is one image set (returns {space: Memorisation}) or a mapping {model: images}
    (returns {model: {space: Memorisation}}, the test distances computed once for all models).
    """
    models = dict(generated) if isinstance(generated, Mapping) else {"": generated}
    shapes = {tuple(as_unit_images(x[:1]).shape[1:]) for x in (*models.values(), train, test)}
    if len(shapes) != 1:
        raise CxrnbError(f"generated, train and test images must share one shape, "
                         f"got {sorted(shapes)}")
    (c, h, w), = shapes
    spaces = {Space.PIXEL: (lambda x: x, (c * h * w) ** 0.5)}
    if feature_fn is not None:
        spaces[Space.FEATURE] = (lambda x: torch.cat([feature_fn(x[i:i + chunk])
                                                  for i in range(0, len(x), chunk)]), 1.0)
    out: dict[str, dict[Space, Memorisation]] = {name: {} for name in models}
    for space, (embed, scale) in spaces.items():
        ref = embed(train)
        td = nearest(embed(test), ref, chunk, progress)[0].numpy() / scale
        thr = float(np.quantile(td, quantile))
        for name, x in models.items():
            gd, gi = nearest(embed(x), ref, chunk, progress)
            gd = gd.numpy() / scale
            out[name][space] = Memorisation(space, gd, gi.numpy(), td, quantile, thr,
                                            float((gd < thr).mean()))
    return out if isinstance(generated, Mapping) else out[""]
