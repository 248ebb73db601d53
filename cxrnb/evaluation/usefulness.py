"""Do synthetic images help a classifier? The augmentation experiment the paper names as future work.

One classifier per training regime (``Regime``) and seed, scored by test AUROC on real images. Every
regime trains for the same number of gradient steps in all (the equal-steps rule: more data or an
extra stage never means more training), and the controls (real images duplicated, blank images
carrying real labels) tell an effect of the synthetic images from one of more images or of the
labels alone. Three ways to use synthetic images, after the published work:

- mixing: real + synthetic in one training set (the paper's §6 suggestion);
- pretraining: synthetic first, then fine-tuning on real (the regime RoentGen-v2 found strongest),
  half the steps each;
- balancing: synthetic images only for the rarest findings (the paper's §4 suggestion), generated
  for real label rows that carry them (``rare_label_rows``).

Spreads, like the Fréchet distances', pool the seeds with resampling inside: each classifier is
scored on the whole test set and on ``RESAMPLES`` bootstrap draws of it (the same draws for every
classifier, whatever the call), drawing patients rather than images (one patient's images are not
independent), and a score's spread is that of one (seed, draw) pair by the law of total variance.
A change between two regimes is read from the paired differences (same seed index, same draw), so
a finding with a handful of test positives, whose AUROC moves with every draw, cannot be called
helped or hurt on the strength of three seeds alone. Regimes of unequal seed counts (the blank
control trains more) pair by draw only (``_difference``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from torch import Tensor
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images, noisy
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.classifier import ClassifierConfig, checked, fit_classifier, total_steps
from cxrnb.labels import FINDINGS


class Regime(StrEnum):
    """The training sets ``usefulness`` compares, in the order it trains them."""

    REAL = "real"
    MIXED = "real+synthetic"                        # the question
    PRETRAINED = "synthetic, then real"             # pretrain on synthetic, fine-tune on real
    RARE = "real+synthetic (rare findings)"         # synthetic images for the rarest findings only
    DUPLICATED = "real+real (duplicated)"           # control: more images, no new information
    SYNTHETIC = "synthetic"
    BLANK = "blank (mean grey + noise)"             # control: the labels without the images


REGIMES = tuple(Regime)
BLANK_NOISE = 0.1   # std of the blank images' noise (grey levels in [0, 1])
RESAMPLES = 100     # bootstrap draws of the test set each classifier is also scored on
RESAMPLE_SEED = 0   # one set of draws for every call, so that scores of separate calls pair draw by draw
FULL = -1           # the ``resample`` of a score on the whole test set
MACRO = "macro"


@dataclass
class TrainingSet:
    """A regime's training data: one (images, labels) pair per stage, trained in order, the steps
    split evenly over the stages; ``words`` says what it holds."""

    stages: list[tuple[Tensor, Tensor]]
    words: str

    @property
    def n_images(self) -> int:
        return sum(len(x) for x, _ in self.stages)


def _present_counts(labels: Tensor) -> pd.Series:
    """Positives per finding in ``labels`` (N, 15), the findings with at least one, fewest first."""
    counts = pd.Series(labels[:, :len(FINDINGS)].sum(0).numpy(), index=list(FINDINGS))
    return counts[counts > 0].sort_values(kind="stable")


def rare_findings(labels: Tensor, k: int = 3) -> list[str]:
    """The ``k`` findings with the fewest (but at least one) positives in ``labels`` (N, 15)."""
    return list(_present_counts(labels).index[:k])


def rare_set_size(labels: Tensor, k: int = 3) -> int:
    """How many synthetic images balance the ``k`` rarest findings: enough to bring their positives,
    together, up to ``k`` times the median finding's count (the mean of the middle two for an even
    number of findings; at least ``k`` images)."""
    present = _present_counts(labels)
    rare = present.iloc[:k]
    return max(k, int(round(len(rare) * float(present.median()) - float(rare.sum()))))


def rare_label_rows(labels: Tensor, n: int, k: int = 3, seed: int = 0) -> Tensor:
    """``n`` label rows (N, 15) to generate synthetic images for, drawn with replacement from the
    real rows that carry at least one of the ``k`` rarest findings: the rare findings then appear
    about as often as they co-occur in real images, which keeps the label mix realistic."""
    cols = [FINDINGS.index(f) for f in rare_findings(labels, k)]
    carriers = torch.nonzero(labels[:, cols].sum(1) > 0).flatten()
    if len(carriers) == 0:
        raise CxrnbError("no training image carries a finding: cannot balance the rare findings")
    g = torch.Generator().manual_seed(seed)
    return labels[carriers[torch.randint(len(carriers), (n,), generator=g)]].clone()


def training_sets(xr: Tensor, yr: Tensor, xs: Tensor | None, ys: Tensor | None, seed: int,
                  rare: tuple[Tensor, Tensor] | None = None) -> dict[Regime, TrainingSet]:
    """Each regime's training set from checked real and synthetic sets (``rare``: the synthetic set
    generated for ``rare_label_rows``; without it there is no RARE regime; without a synthetic set,
    ``xs`` None, the controls and real alone); the blank images' noise is drawn from a generator
    seeded with ``seed``."""
    real_u = as_unit_images(xr)
    g = torch.Generator().manual_seed(seed)
    blank = noisy(torch.full_like(real_u, float(real_u.mean())), BLANK_NOISE, g)
    n_real = f"{len(xr):,} real"
    out = {Regime.REAL: TrainingSet([(xr, yr)], n_real),
           Regime.DUPLICATED: TrainingSet([(torch.cat([real_u, real_u]), torch.cat([yr, yr]))],
                                          f"{n_real}, each twice"),
           Regime.BLANK: TrainingSet([(blank, yr)], f"{len(xr):,} blank, real labels")}
    if xs is None:                   # (``usefulness`` trains the regimes in REGIMES' order, not this one's)
        return out
    n_synth = f"{len(xs):,} synthetic"
    out[Regime.MIXED] = TrainingSet([(torch.cat([real_u, as_unit_images(xs)]), torch.cat([yr, ys]))],
                                    f"{n_real} + {n_synth}")
    out[Regime.PRETRAINED] = TrainingSet([(xs, ys), (xr, yr)], f"{n_synth}, then {n_real}")
    out[Regime.SYNTHETIC] = TrainingSet([(xs, ys)], n_synth)
    if rare is not None:
        xq, yq = rare
        out[Regime.RARE] = TrainingSet([(torch.cat([real_u, as_unit_images(xq)]), torch.cat([yr, yq]))],
                                       f"{n_real} + {len(xq):,} synthetic (rare findings)")
    return out


def stage_steps(steps: int, n_stages: int) -> list[int]:
    """``steps`` split over ``n_stages`` as evenly as integers allow (the first stages take the rest)."""
    base, rest = divmod(steps, n_stages)
    return [base + (i < rest) for i in range(n_stages)]


def test_resamples(n: int, k: int = RESAMPLES, groups=None, seed: int = RESAMPLE_SEED) -> list[np.ndarray]:
    """``k`` bootstrap draws of the indices of a test set of ``n`` images, from ``seed``: with
    ``groups`` (each image's patient), patients are drawn with replacement and each brings all its
    images, so a draw's size varies; without, images are drawn. The same arguments give the same
    draws, so every classifier is scored on the same ones."""
    g = np.random.default_rng(seed)
    if groups is None:
        return [g.integers(0, n, n) for _ in range(k)]
    groups = np.asarray(groups)
    if len(groups) != n:
        raise CxrnbError(f"{len(groups)} patient ids for {n} test images")
    ids, members = np.unique(groups, return_inverse=True)
    by_id = [np.flatnonzero(members == i) for i in range(len(ids))]
    return [np.concatenate([by_id[i] for i in g.integers(0, len(ids), len(ids))]) for _ in range(k)]


def aurocs(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ROC AUC per finding of probabilities ``p`` against labels ``y`` (both (N, 14)), NaN where a
    finding's labels hold one class only, and their mean over the findings with a value, "macro".

    By the Mann-Whitney identity, all findings at once: AUC = (rank sum of the positives - n1(n1+1)/2)
    / (n1 n0), ties taking their average rank, which is what scikit-learn's ``roc_auc_score`` gives
    (tested); a classifier is scored on ``RESAMPLES`` draws of the test set, so the speed counts."""
    ranks = rankdata(p, axis=0)
    pos = y.sum(0)
    neg = len(y) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    auc = np.where((pos > 0) & (neg > 0), auc, np.nan)
    values = auc[~np.isnan(auc)]
    return dict(zip(FINDINGS, auc.tolist())) | {MACRO: float(values.mean()) if len(values) else np.nan}


def seed_aurocs(regime: Regime, data: TrainingSet, test: tuple[Tensor, Tensor], seeds,
                cfg: ClassifierConfig, device: str | torch.device, progress: bool,
                resamples: list[np.ndarray] | None = None) -> list[dict]:
    """Test AUROC per finding and "macro" of one classifier per seed trained on ``data``'s stages in
    order (each stage fine-tunes the previous one) for ``cfg.steps`` steps in all, on the whole test
    set (resample ``FULL``) and on each row of ``resamples`` (``test_resamples``): one row per
    (seed, resample, finding)."""
    rows = []
    xt, yt = test
    y = yt.numpy()
    for seed in tqdm(seeds, desc=f"usefulness: {regime}", disable=not progress):
        clf = None
        for (x, lab), steps in zip(data.stages, stage_steps(cfg.steps, len(data.stages))):
            clf = fit_classifier(x, lab, replace(cfg, seed=seed, steps=steps), device=device, progress=False,
                                 init=clf)
        p = clf.predict_proba(xt).numpy()
        draws = [(FULL, slice(None))] + list(enumerate(resamples or []))
        for b, idx in draws:
            rows += [{"regime": regime, "seed": seed, "resample": b, "finding": f, "auroc": a}
                     for f, a in aurocs(p[idx], y[idx]).items()]
    return rows


def _pooled(full: pd.Series, draws: pd.DataFrame) -> float:
    """The spread of one (seed, draw): the variance of the per-seed scores on the whole test set plus
    the mean over seeds of the variance over the draws (the law of total variance). NaN with one seed:
    the draws alone say nothing of how much the classifier changes with its seed."""
    if len(full) < 2:
        return float("nan")
    within = float(draws.groupby("seed")["auroc"].var(ddof=1).mean()) if len(draws) else 0.0
    return float(np.sqrt(float(full.var(ddof=1)) + (0.0 if np.isnan(within) else within)))


def _unpaired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float]:
    """Mean and spread of a - b for regimes of unequal seed counts: the difference of the whole-test
    means; the spread by the law of total variance as in ``_pooled``, its seed part the two regimes'
    seed variances added (no seed pairs with another), its draw part the variance over the draws of
    a_i - b_j averaged over every pair of seeds (i, j): both are scored on the same draws, so the
    test set's sampling cancels as it does in a paired difference. NaN with fewer than two seeds."""
    whole = lambda t: t[t["resample"] == FULL].set_index("seed")["auroc"]               # noqa: E731
    fa, fb = whole(a), whole(b)
    mean = float(fa.mean() - fb.mean())
    if min(len(fa), len(fb)) < 2:
        return mean, float("nan")
    per_draw = lambda t: t[t["resample"] != FULL].pivot(index="resample", columns="seed", values="auroc")  # noqa: E731
    da, db = per_draw(a).align(per_draw(b), join="inner", axis=0)
    within = 0.0
    if len(da) > 1:
        diffs = da.to_numpy()[:, :, None] - db.to_numpy()[:, None, :]      # draws x seeds of a x seeds of b
        with warnings.catch_warnings():          # a finding absent from every draw: NaN, as pandas gives it
            warnings.simplefilter("ignore", RuntimeWarning)
            within = float(np.nanmean(np.nanvar(diffs, axis=0, ddof=1)))     # NaN draws: one class only
    return mean, float(np.sqrt(fa.var(ddof=1) + fb.var(ddof=1) + within))


def _difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float]:
    """Mean and spread of a - b, paired by seed index (the i-th seed of each) and by draw, where both
    have as many seeds; where they do not (the blank control trains more seeds than the regimes it
    is compared with: ``synthetic_usefulness``'s ``extra_blank_seeds``), by draw only (``_unpaired``)."""
    if a.seed.nunique() != b.seed.nunique():
        return _unpaired(a, b)
    key = ["pair", "resample"]
    rank = lambda t: t.assign(pair=t.seed.rank(method="dense").astype(int))  # noqa: E731
    d = rank(a).merge(rank(b), on=key, suffixes=("", "_b"), validate="one_to_one")
    d["auroc"] = d["auroc"] - d["auroc_b"]
    d["seed"] = d["pair"]
    full = d[d["resample"] == FULL]["auroc"]
    return float(full.mean()), _pooled(full, d[d["resample"] != FULL])


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    """Per (regime, finding) of ``seed_aurocs`` rows: the mean over seeds on the whole test set, its
    pooled spread (``_pooled``), the seeds; each regime's change against real images alone
    (``change``, ``change_std``) and synthetic images' against the blank control (``vs_blank``,
    ``vs_blank_std``), from paired differences (``_difference``; by draw only where the seed counts
    differ). Rows of one (regime, finding, seed, draw) twice (two generators' regimes pooled by
    mistake) are refused."""
    twice = long.duplicated(["regime", "finding", "seed", "resample"])
    if twice.any():
        first = long[twice].iloc[0]
        raise CxrnbError(f"usefulness rows of {first.regime!r}, seed {first.seed}, appear twice: summarise one "
                         "generator's regimes (and the shared controls) at a time")
    out = []
    by = {k: g for k, g in long.groupby(["regime", "finding"], sort=False)}
    for (regime, finding), g in by.items():
        full, draws = g[g["resample"] == FULL], g[g["resample"] != FULL]
        row = {"regime": regime, "finding": finding, "mean": float(full.auroc.mean()),
               "std": _pooled(full.auroc, draws), "n_seeds": int(full.seed.nunique())}
        for col, ref in (("change", Regime.REAL), ("vs_blank", Regime.BLANK)):
            wanted = col == "change" and regime != Regime.REAL or col == "vs_blank" and regime == Regime.SYNTHETIC
            if wanted and (ref, finding) in by:
                row[col], row[f"{col}_std"] = _difference(g, by[(ref, finding)])
        out.append(row)
    return pd.DataFrame(out)


def usefulness(train_real, train_labels, synth, synth_labels, test, test_labels,
               seeds=(0, 1, 2), cfg: ClassifierConfig | None = None,
               device: str | torch.device = "cpu", progress: bool = True,
               rare: tuple | None = None, regimes: tuple[Regime, ...] | None = None,
               resamples: int = RESAMPLES, test_groups=None, long: bool = False) -> pd.DataFrame:
    """Do synthetic images help a classifier? Test AUROC on real images, mean ± spread over ``seeds``
    and ``resamples`` bootstrap draws of the test set, after training on each regime, every one for
    the same number of gradient steps in all (``cfg.epochs`` epochs of the real set), so more data
    never means more training:

    - real; real + synthetic (the question); synthetic, then real (pretraining: half the steps on
      each); real + synthetic images of the rarest findings (when ``rare=(images, labels)`` is given,
      generated for ``rare_label_rows``); synthetic only;
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
    Without synthetic images (``synth`` None) only real images and the controls can be trained.
    ``regimes`` limits the regimes trained (all that the inputs allow by default); ``test_groups``
    (each test image's patient) makes the bootstrap draw patients (``test_resamples``). Returns one row
    per (regime, finding), the findings plus "macro" (mean over the findings with an AUROC), with
    columns mean, std, n_seeds, the changes of ``summarise``, the training set in words, its size,
    the steps and the finding's test positives; with ``long``, the ``seed_aurocs`` rows instead, with
    the same descriptive columns (``summarise`` them after pooling several calls).
    """
    cfg = cfg or ClassifierConfig()
    xr, yr = checked(train_real, train_labels)
    xs, ys = checked(synth, synth_labels) if synth is not None else (None, None)
    xt, yt = checked(test, test_labels)
    rare = checked(*rare) if rare is not None else None
    sizes = ({"real": xr, "test": xt} | ({"synthetic": xs} if xs is not None else {})
             | ({"rare synthetic": rare[0]} if rare else {}))
    if len({tuple(x.shape[-2:]) for x in sizes.values()}) > 1:
        raise CxrnbError("image sizes differ: " + ", ".join(f"{k} {tuple(x.shape[-2:])}" for k, x in sizes.items())
                         + "; resize to one size")
    steps = total_steps(cfg, len(xr))
    data = training_sets(xr, yr, xs, ys, cfg.seed, rare)
    wanted = [r for r in (regimes or REGIMES) if r in data]
    stages = max((len(data[r].stages) for r in wanted), default=1)
    if 1 <= steps < stages:           # (0 steps: fit_classifier says what is missing)
        more = "steps" if cfg.steps is not None else "epochs or images"
        raise CxrnbError(f"{steps} gradient step(s) ({len(xr)} real images, batch {cfg.batch_size}) cannot be "
                         f"split over {stages} training stages: use more {more}")
    draws = test_resamples(len(xt), resamples, test_groups) if resamples else None
    rows = []
    for regime in wanted:
        rows += seed_aurocs(regime, data[regime], (xt, yt), seeds, replace(cfg, steps=steps), device, progress,
                            draws)
    out = pd.DataFrame(rows) if long else summarise(pd.DataFrame(rows))
    out["training set"] = out.regime.map(lambda r: data[r].words)
    out["n_train"] = out.regime.map(lambda r: data[r].n_images)
    out["steps"] = steps
    out["n_test"] = len(xt)
    positives = dict(zip(FINDINGS, yt.sum(0).numpy().astype(int)))
    out["test_positives"] = out.finding.map(lambda f: positives.get(f, np.nan))
    return out
