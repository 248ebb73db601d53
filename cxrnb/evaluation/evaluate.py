"""Scoring generated images against real ones: every metric of ``metrics``, in every available
feature space, on repeated random subsets, so each number carries its spread.

The steps, in the order ``evaluate`` runs them: draw each repeat's subsets, score each feature
space (Fréchet distance, FD∞, KID, precision / recall, density / coverage), then MS-SSIM diversity
and the memorised fractions in pixel space, and assemble one long-form row per (set, space, metric).
Beside the models, two kinds of rows give the numbers a scale: a second real subset scored like a
model (``REAL``, what a perfect generator would get at the same n), and the calibration ladder's
degraded real images (``LADDER``, ``cxrnb.evaluation.ladder``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from torch import Tensor
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.features import FeatureExtractor
from cxrnb.evaluation.metrics import (
    Memorisation,
    Space,
    density_coverage,
    effective_dimension,
    fd_infinity,
    frechet_from_features,
    kid,
    ms_ssim_diversity,
    precision_recall,
)

REAL = "real (held-out)"   # the reference row: a second real subset scored like a model
LADDER = "ladder: "        # prefix of the calibration rows: degraded real test images (ladder.py)
COLUMNS = ["model", "kind", "space", "dim", "eff_dim", "metric", "mean", "std", "note"]

# scores[(set, space, metric)]: one value per repeat, in the order they were computed
Scores = dict[tuple[str, str, str], list[float]]


class Kind(StrEnum):
    """What a scored set is: a generator, the real reference, or a rung of the calibration ladder."""

    MODEL = "model"
    REFERENCE = "reference"
    LADDER = "ladder"


FD_METRICS = ("FD", "FID")     # the names ``fd_metric`` gives the Fréchet distance


def fd_metric(extractor: FeatureExtractor) -> str:
    """'FID' in Inception's feature space only, 'FD' in every other (the space names which)."""
    return "FID" if extractor.name == "inception-v3" else "FD"


@dataclass(frozen=True)
class Settings:
    """How each pair of subsets is scored (``evaluate``'s arguments of the same names)."""

    k: int = 3                      # precision / recall
    dc_k: int = 5                   # density / coverage
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    ms_ssim_pairs: int = 200
    seed: int = 0                   # repeat r seeds its FD∞, KID and MS-SSIM draws with seed + r


@dataclass(frozen=True)
class Subsets:
    """Each repeat's random subsets of ``size`` images: one permutation per set that is not a rung.
    The real set's first ``size`` are A, what every set is scored against; its next ``size`` are B,
    the reference row's subset, and a rung takes B's indices, so no rung is compared with the very
    images it was made from."""

    perms: list[dict[str, np.ndarray]]
    size: int
    rungs: frozenset[str]

    @property
    def repeats(self) -> int:
        return len(self.perms)

    def reference(self, r: int) -> np.ndarray:
        """Subset A of repeat r."""
        return self.perms[r][REAL][:self.size]

    def pick(self, name: str, r: int) -> np.ndarray:
        """Repeat r's subset of set ``name``."""
        if name == REAL or name in self.rungs:
            return self.perms[r][REAL][self.size:2 * self.size]
        return self.perms[r][name][:self.size]


def draw_subsets(sets: Mapping[str, object], rungs: Collection[str], size: int, n_repeats: int,
                 seed: int) -> Subsets:
    """The permutations of every repeat, repeat by repeat and set by set, from one seeded generator."""
    rng = np.random.default_rng(seed)
    perms = [{name: rng.permutation(len(x)) for name, x in sets.items() if name not in rungs}
             for _ in range(n_repeats)]
    return Subsets(perms, size, frozenset(rungs))


def choose_subset_size(n_real: int, models: Mapping[str, object], rungs: Mapping[str, object],
                requested: int | None, settings: Settings) -> int:
    """The subset size (default: half the real set, capped by the smallest generated set), checked
    against what the sets and the k-NN metrics need."""
    k, dc_k = settings.k, settings.dc_k
    s = requested or min([n_real // 2] + [len(x) for x in models.values()])
    if s < max(k, dc_k) + 2 or 2 * s > n_real or any(len(x) < s for x in models.values()):
        raise CxrnbError(f"subset_size {s} needs 2 x {s} real images (have {n_real}), as many per "
                         f"model (have {min(len(x) for x in models.values())}) and > "
                         f"{max(k, dc_k) + 1} (the k-NN metrics' k + 1)")
    if any(len(x) != n_real for x in rungs.values()):
        raise CxrnbError(f"ladder sets must be made from real_test image by image ({n_real} images), "
                         f"got {[len(x) for x in rungs.values()]}")
    return s


def pair_scores(fa, fb, fd: str, size: int, r: int, settings: Settings) -> dict[str, float]:
    """Every feature-space metric of one generated (or reference, or rung) subset ``fb`` against the
    real subset ``fa`` in repeat r, by name."""
    p, rc = precision_recall(fa, fb, settings.k)
    dens, cov = density_coverage(fa, fb, settings.dc_k)
    seed = settings.seed + r
    # a KID subset as large as the set is the whole set: one draw gives the value
    subsets = settings.kid_subsets if settings.kid_subset_size < size else 1
    return {fd: frechet_from_features(fa, fb), f"{fd}∞": fd_infinity(fa, fb, draws=1, seed=seed),
            "KID": kid(fa, fb, subsets, min(settings.kid_subset_size, size), seed)[0],
            "precision": p, "recall": rc, "density": dens, "coverage": cov}


def score_feature_space(ext: FeatureExtractor, sets: Mapping[str, object], subsets: Subsets,
                        settings: Settings, scores: Scores, progress: bool) -> tuple[int, float]:
    """Add every set's feature-space metrics of each repeat to ``scores``; returns the space's
    dimension and the effective dimension of the real test features."""
    feats = {name: ext(x, progress).double() for name, x in sets.items()}
    fd = fd_metric(ext)
    for r in tqdm(range(subsets.repeats), desc=f"metrics in {ext.name}", disable=not progress):
        fa = feats[REAL][subsets.reference(r)]
        for name in sets:
            m = pair_scores(fa, feats[name][subsets.pick(name, r)], fd, subsets.size, r, settings)
            for metric, v in m.items():
                scores.setdefault((name, ext.name, metric), []).append(v)
    return feats[REAL].shape[1], effective_dimension(feats[REAL])


def score_diversity(sets: Mapping[str, object], subsets: Subsets, settings: Settings,
                    scores: Scores, progress: bool) -> None:
    """Add each repeat's MS-SSIM diversity of every subset but the rungs' to ``scores`` (pixel space):
    rungs place distances on a scale; their diversity says nothing."""
    for r in tqdm(range(subsets.repeats), desc="MS-SSIM diversity", disable=not progress):
        for name, x in sets.items():
            if name in subsets.rungs:
                continue
            images = as_unit_images(x[np.sort(subsets.pick(name, r))])
            v = ms_ssim_diversity(images, settings.ms_ssim_pairs, settings.seed + r)
            scores.setdefault((name, Space.PIXEL, "MS-SSIM"), []).append(v)


def score_memorised(memorised: Mapping[str, Memorisation], sets: Mapping[str, object],
                    subsets: Subsets, scores: Scores) -> None:
    """Add each repeat's fraction of a subset closer to a training image than the threshold of
    ``memorised`` (one shared by every model); the real row uses the test images' own distances."""
    any_mem = next(iter(memorised.values()))
    dist = {REAL: any_mem.test_dist, **{n: m.gen_dist for n, m in memorised.items() if n in sets}}
    for r in range(subsets.repeats):
        for name, d in dist.items():
            v = float((d[subsets.pick(name, r)] < any_mem.threshold).mean())
            scores.setdefault((name, Space.PIXEL, "memorised"), []).append(v)


def scored_rows(scores: Scores, kinds: Mapping[str, Kind],
                dims: Mapping[str, tuple[int, float]]) -> list[dict]:
    """One row per (set, space, metric): mean and std (ddof 1; NaN for one repeat) over repeats."""
    rows = []
    for (name, space, metric), vals in scores.items():
        dim, eff = dims.get(space, (np.nan, np.nan))
        rows.append({"model": name, "kind": kinds[name], "space": space, "dim": dim, "eff_dim": eff,
                     "metric": metric, "mean": float(np.mean(vals)),
                     "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan, "note": ""})
    return rows


def evaluate(real_test, generated, extractors: Sequence[FeatureExtractor], n_repeats: int = 5,
             subset_size: int | None = None, seed: int = 0, k: int = 3, dc_k: int = 5,
             kid_subsets: int = 50, kid_subset_size: int = 1000, ms_ssim_pairs: int = 200,
             ladder: Mapping[str, Tensor] | None = None,
             memorised: Mapping[str, Memorisation] | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Every metric in every available feature space, mean ± std over ``n_repeats`` random subsets.

    ``generated`` is one image set or a mapping {model name: images}. Each repeat draws two disjoint
    real subsets A and B of ``subset_size`` (default: half the real set, capped by the smallest
    generated set) and one of each generated set: every model is scored against A, and B is scored
    against A as the row ``"real (held-out)"`` — the value a perfect generator would get at this n.

    ``ladder`` ({rung: images}, ``cxrnb.evaluation.ladder.ladder``): degraded copies of ``real_test``,
    image i made from real_test[i]; each repeat scores the copies of B's images (``Subsets``).
    ``memorised`` ({model: pixel ``Memorisation``} from ``metrics.memorisation``): metric
    "memorised" is the fraction of each subset below its threshold.

    Returns long-form rows: model, kind (``Kind``), space, dim, eff_dim (of the real test features),
    metric, mean, std, n_real, n_generated, n_repeats, note. Metrics per feature space: FD (FID for
    Inception), FD∞, KID, precision, recall (k), density, coverage (dc_k); in pixel space MS-SSIM
    (models and the real row) and memorised. An unavailable space gets one row with its reason in
    ``note`` and no numbers.
    """
    models = dict(generated) if isinstance(generated, Mapping) else {"generated": generated}
    rungs = {(n if n.startswith(LADDER) else LADDER + n): x for n, x in (ladder or {}).items()}
    settings = Settings(k, dc_k, kid_subsets, kid_subset_size, ms_ssim_pairs, seed)
    s = choose_subset_size(len(real_test), models, rungs, subset_size, settings)
    sets = {REAL: real_test, **models, **rungs}
    kinds = {name: Kind.REFERENCE if name == REAL else Kind.LADDER if name in rungs else Kind.MODEL
             for name in sets}
    subsets = draw_subsets(sets, rungs, s, n_repeats, seed)
    notes, scores, dims = [], {}, {}
    for ext in extractors:
        if not ext.available:
            notes.append({"model": "", "space": ext.name, "metric": "", "note": ext.status()})
            continue
        dims[ext.name] = score_feature_space(ext, sets, subsets, settings, scores, progress)
    score_diversity(sets, subsets, settings, scores, progress)
    if memorised:
        score_memorised(memorised, sets, subsets, scores)
    df = pd.DataFrame(notes + scored_rows(scores, kinds, dims), columns=COLUMNS)
    df["n_real"], df["n_generated"], df["n_repeats"] = s, s, n_repeats
    return df


def over_training_seeds(rows: pd.DataFrame, replicate_of: Mapping[str, str]) -> pd.DataFrame:
    """Each model's rows pooled over its training seeds: ``rows`` (from one ``evaluate`` call) hold a
    model's own run under its name and each replicate under a name that ``replicate_of`` maps to the
    model's. Per (model, space, metric) the mean is the mean over seeds of the per-seed means, and the
    spread is that of one (training seed, subset) draw, by the law of total variance: the variance of
    the per-seed means plus the mean resampling variance within a seed. ``n_seeds`` says how many
    training runs each row pools; ladder and reference rows (no training) keep their own spread and
    count 1. The replicates' own rows are pooled away (``rows`` still has them, one per seed)."""
    rows = rows.copy()
    rows["of"] = rows.model.map(lambda m: replicate_of.get(m, m))
    scored = rows[rows.metric != ""]
    out = []
    for (model, _, _), g in scored.groupby(["of", "space", "metric"], sort=False):
        first = g[g.model == model].iloc[0] if (g.model == model).any() else g.iloc[0]
        row = first.to_dict()
        n = len(g)
        if n > 1:
            within = float(np.nanmean(g["std"] ** 2)) if g["std"].notna().any() else 0.0
            row["mean"] = float(g["mean"].mean())
            row["std"] = float(np.sqrt(g["mean"].var(ddof=1) + within))
        row["model"], row["n_seeds"] = model, n
        out.append(row)
    notes = rows[rows.metric == ""].assign(n_seeds=np.nan)
    return pd.concat([notes, pd.DataFrame(out)], ignore_index=True).drop(columns="of")
