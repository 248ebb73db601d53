"""reports/results.md: the measured numbers in one table, and what they say about the paper's claim.

The paper concluded by eye that the LSGAN's samples were best and the VAEs' blurry. Here that
ranking is read off the Fréchet distances in each feature space, called settled only when the gap
is more than twice the spread of the difference over repeated subsets, and stated only where every
available feature space settles it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cxrnb.evaluation.evaluate import FD_METRICS, LADDER, REAL, Kind
from cxrnb.evaluation.label_evidence import Movement
from cxrnb.evaluation.metrics import BLANK_SHARE
from cxrnb.models import PRESETS
from cxrnb.models.base import Family
from cxrnb.paths import write_text
from cxrnb.report.numbers import MIN_SEEDS, count, crossing, fmt, trend, verdict
from cxrnb.report.tables import markdown_table
from cxrnb.report.usefulness import LABEL_TARGET, generators_section

# Which way is better. MS-SSIM diversity is best near the real images' own value: lower than that
# is not "more realistic", only noisier. Density is best near 1.
DIRECTION = {"FD": "↓", "FID": "↓", "FD∞": "↓", "FID∞": "↓", "KID": "↓", "precision": "↑",
             "recall": "↑", "density": "≈ 1", "coverage": "↑", "MS-SSIM": "≈ real",
             "memorised": "≈ real"}
MS_SSIM_NOTE = ("MS-SSIM here uses 3 scales with a 7-px Gaussian window (σ 1.5) at 64 px, weights "
                "renormalised; it is not comparable with published 5-scale MS-SSIM, which needs "
                "≥ 160 px.")
ROW_ORDER = {Kind.MODEL: 0, Kind.LADDER: 1, Kind.REFERENCE: 2}      # the rows of a score table


def _scored(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows[rows.metric != ""].copy()
    guess = out.model.map(lambda m: Kind.REFERENCE if m == REAL else Kind.MODEL)
    out["kind"] = out["kind"].fillna(guess) if "kind" in out else guess
    return out


def family_of(model: str, families: Mapping[str, str | None] | None = None) -> str | None:
    """The family of a scored model: from ``families`` (model -> family, e.g. ``scoring.families``,
    None for a post-hoc selection) where it names the model, else from its preset
    (``models.PRESETS``); None for neither."""
    if families and model in families:
        return families[model]
    return PRESETS[model].family if model in PRESETS else None


def _fd(rows: pd.DataFrame) -> pd.DataFrame:
    """The models' Fréchet-distance rows (FD or FID), one per (space, model)."""
    sc = _scored(rows)
    return sc[sc.metric.isin(FD_METRICS) & (sc.kind == Kind.MODEL) & sc["mean"].notna()]


def seeds_of(r: pd.Series) -> int:
    """How many training seeds a score row pools (1 where the rows do not say)."""
    n = r.get("n_seeds", 1)
    return 1 if pd.isna(n) else int(n)


def compare(a: pd.Series, b: pd.Series) -> str:
    """``verdict`` on two Fréchet-distance rows (lower is better), with the fewer training seeds of
    the two: a gap is settled only beyond twice the combined spread over training seeds."""
    return verdict(a["mean"], a["std"], b["mean"], b["std"], seeds=min(seeds_of(a), seeds_of(b)))


def _best_per_family(part: pd.DataFrame, families: Mapping[str, str | None] | None,
                     key=lambda family: family) -> dict:
    """{key(family): its row of lowest mean}, in the order of their best rows; rows of no family (a
    post-hoc selection, see ``scoring.families``) represent none."""
    best = {}
    for _, r in part.sort_values("mean").iterrows():
        if (fam := family_of(r.model, families)) is not None:
            best.setdefault(key(fam), r)
    return best


def ranking_sentences(rows: pd.DataFrame, families: Mapping[str, str | None] | None = None) -> list[str]:
    """Per feature space: does 'GAN better than VAE and GMVAE' hold on the Fréchet distance?
    Each family is represented by its best model (lowest mean)."""
    out = []
    for space, part in _fd(rows).groupby("space", sort=False):
        metric = part.metric.iloc[0]
        best = _best_per_family(part, families)
        if Family.GAN not in best:
            out.append(f"{metric} ({space}): no GAN row, so the paper's ranking cannot be checked.")
            continue
        g = best[Family.GAN]
        bits = []
        for other in (Family.VAE, Family.GMVAE):
            if other not in best:
                bits.append(f"no {other.upper()} row to compare")
                continue
            o = best[other]
            v = compare(g, o)
            bits.append(f"{g.model} vs {o.model}: {v} ({fmt(g['mean'], g['std'])} vs "
                        f"{fmt(o['mean'], o['std'])})")
        out.append(f"{metric} ({space}): GAN better than VAE and GMVAE — " + "; ".join(bits) + ".")
    return out


FAMILY_NAMES = {Family.GAN: "GAN", Family.VAE: "VAE", Family.GMVAE: "GMVAE",
                Family.DIRVAE: "Dirichlet VAE", Family.DIFFUSION: "diffusion"}


def _family_model(family: str | None, r: pd.Series) -> str:
    """'GAN (LSGAN 50.0 ± 2.0)': a family by its best model and that model's score."""
    return f"{FAMILY_NAMES.get(family, family)} ({r.model} {fmt(r['mean'], r['std'])})"


def family_order_sentences(rows: pd.DataFrame, families: Mapping[str, str | None] | None = None) -> list[str]:
    """Per feature space: every family's best model (lowest FD) in order, each neighbour pair
    marked "<" where the gap exceeds twice its spread and "≈" where it does not."""
    out = []
    for space, part in _fd(rows).groupby("space", sort=False):
        best = _best_per_family(part, families)
        if len(best) < 2:
            continue
        ranked = list(best.items())
        text = _family_model(*ranked[0])
        for (_, a), (f, b) in zip(ranked, ranked[1:]):
            sign = "<" if compare(a, b) == "holds" else "≈"
            text += f" {sign} {_family_model(f, b)}"
        out.append(f"{part.metric.iloc[0]} ({space}), best model of each family: {text}.")
    return out


def agreement_lines(rows: pd.DataFrame) -> list[str]:
    """Pairwise order of the models on the Fréchet distance, stated only where every available
    feature space settles it the same way (gap beyond twice the spread); pairs that the spaces
    settle in opposite directions are named as disagreements."""
    fd = _fd(rows)
    spaces = list(dict.fromkeys(fd.space))
    if len(spaces) < 2:
        return [f"Only {len(spaces)} feature space scored: no ranking is stated (two must agree)."]
    table = {sp: fd[fd.space == sp].set_index("model") for sp in spaces}
    models = [m for m in dict.fromkeys(fd.model) if all(m in t.index for t in table.values())]
    agree, disagree, open_ = [], [], 0
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            votes = set()
            for t in table.values():
                v = compare(t.loc[a], t.loc[b])
                votes.add({"holds": a, "reversed": b}.get(v))
            if votes == {a} or votes == {b}:
                w = votes.pop()
                agree.append(f"{w} < {b if w == a else a}")
            elif {a, b} <= votes:
                disagree.append(f"{a} vs {b}")
            else:
                open_ += 1
    names = " and ".join(f"`{sp}`" for sp in spaces)
    return [f"Settled the same way in {names} (lower FD is better): "
            + (", ".join(agree) if agree else "no pair") + ".",
            "The spaces disagree on: " + (", ".join(disagree) if disagree else "no pair") + ".",
            f"{open_} pair(s) are not resolved within spread in at least one space."]


def ladder_lines(rows: pd.DataFrame) -> list[str]:
    """Each model's Fréchet distance placed between the calibration ladder's rungs, per space."""
    sc = _scored(rows)
    sc = sc[sc.metric.isin(FD_METRICS)]
    out = []
    for space, part in sc.groupby("space", sort=False):
        rungs = part[part.kind == Kind.LADDER].sort_values("mean")
        if rungs.empty:
            continue
        bits = []
        for _, r in part[part.kind == Kind.MODEL].iterrows():
            below, above = rungs[rungs["mean"] <= r["mean"]], rungs[rungs["mean"] > r["mean"]]
            name = lambda x: f"{x.model.removeprefix(LADDER)} ({fmt(x['mean'], x['std'])})"  # noqa: E731
            if below.empty:
                where = f"better than every rung, the best being {name(above.iloc[0])}"
            elif above.empty:
                where = f"worse than every rung, even {name(below.iloc[-1])}"
            else:
                where = f"between {name(below.iloc[-1])} and {name(above.iloc[0])}"
            bits.append(f"{r.model} {fmt(r['mean'], r['std'])}: {where}")
        out.append(f"{part.metric.iloc[0]} ({space}): " + "; ".join(bits) + ".")
    return out


def score_table(space: str, part: pd.DataFrame) -> list[str]:
    """One feature space's section: its dimensions, then a row per set (models, the ladder, the
    real reference) and a column per metric, each cell "mean ± std"."""
    metrics = list(dict.fromkeys(part.metric))
    first = part.iloc[0]
    if "dim" in part and not pd.isna(first.get("dim", float("nan"))):
        lines = [f"### Feature space `{space}`: dimension {int(first.dim)}, effective dimension "
                 f"{first.eff_dim:.1f} (participation ratio of the real test features)", ""]
    else:
        lines = [f"### `{space}`", ""]
    header = ["model"] + [f"{m} {DIRECTION.get(m, '')}".rstrip() for m in metrics]
    header += ["n real / gen × repeats, training seeds"]
    models = sorted(dict.fromkeys(part.model), key=lambda m: ROW_ORDER[part[part.model == m].kind.iloc[0]])
    cells = []
    for model in models:
        cell = part[part.model == model].set_index("metric")
        scores = [fmt(*cell.loc[m, ["mean", "std"]]) if m in cell.index else "–" for m in metrics]
        r = cell.iloc[0]
        n = f"{r.n_real} / {r.n_generated} × {r.n_repeats}"
        if r.kind == Kind.MODEL:
            n += f", {count(seeds_of(r), 'seed')}"
        cells.append([model, *scores, n])
    return lines + markdown_table(pd.DataFrame(cells, columns=header)).splitlines() + [""]


def spread_note(rows: pd.DataFrame) -> str:
    """What the ± of the model rows pools, computed from their ``n_seeds``."""
    sc = _scored(rows)
    seeds = {r.model: seeds_of(r) for _, r in sc[sc.kind == Kind.MODEL].iterrows()}
    pooled = [m for m, n in seeds.items() if n >= MIN_SEEDS]
    counts = sorted({seeds[m] for m in pooled})
    n = "" if not counts else f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    pooled_text = (f"pool {n} training seeds each: the standard deviation of one (training seed, subset) "
                   "draw, the variance between the seeds' means plus the mean variance over resampled "
                   "subsets within a seed. A gap is settled only beyond twice the combined spread of the pair.")
    single = ("over resampled subsets of their runs only: they do not include the variation between "
              "training seeds, so no gap involving them is called settled")
    if pooled and len(pooled) == len(seeds):
        return f"Spreads (±) of the models {pooled_text}"
    if pooled:
        return (f"Spreads (±) of {', '.join(pooled)} {pooled_text} Those of the other models, with fewer "
                f"than {MIN_SEEDS} training seeds, are {single}.")
    return (f"Spreads (±) of the models with fewer than {MIN_SEEDS} training seeds are {single} "
            "(the `study` profile trains the headline models with 3 seeds).")


def score_notes(rows: pd.DataFrame) -> list[str]:
    """What the rows and columns of the score tables are, and the spaces that could not be scored."""
    lines = [f"- Row `{REAL}`: a second real test subset scored like a model: what a perfect "
             "generator would get at the same n (the small-n floor of every metric). Rows "
             f"`{LADDER}…`: real test images degraded on purpose (the calibration ladder). "
             "FD: Fréchet distance in the named feature space (FID only for Inception features); "
             "FD∞: FD extrapolated to infinitely many images (Chong & Forsyth, 2020). Precision / "
             "recall: Kynkäänniemi et al. (k = 3); density / coverage: Naeem et al. (k = 5). "
             "memorised: fraction of images closer to their nearest training image than the 5th "
             "percentile of the real test images' distances.",
             f"- {spread_note(rows)}",
             f"- {MS_SSIM_NOTE}"]
    return lines + [f"- Feature space `{r.space}`: {r.note}." for _, r in rows[rows.metric == ""].iterrows()]


def ranking_section(rows: pd.DataFrame, families: Mapping[str, str | None] | None) -> list[str]:
    """The ladder placement, the paper's ranking per space, every family in order, and the pairs
    every space settles alike."""
    lines = []
    lade = ladder_lines(rows)
    if lade:
        lines += ["", "## Where the models sit on the calibration ladder", ""] + [f"- {x}" for x in lade]
    lines += ["", "## Does the paper's ranking hold?", ""]
    lines += [f"- {s}" for s in ranking_sentences(rows, families)] or ["- no FD rows."]
    order = family_order_sentences(rows, families)
    if order:
        lines += ["", "Every family, best model first (\"<\": gap beyond twice its spread; \"≈\": not "
                  "resolved):", ""] + [f"- {s}" for s in order]
    lines += ["", "Ranking stated only where the feature spaces agree:", ""]
    lines += [f"- {s}" for s in agreement_lines(rows)]
    return lines + ["", "These verdicts hold for the budgets and image size in the provenance below "
                    "(models trained for minutes on a CPU, at 64 px), not for the paper's settings."]


def arithmetic_lines(per_run: pd.DataFrame, pooled: pd.DataFrame, twins: Mapping[str, str],
                     arithmetic: Mapping[str, str]) -> list[str]:
    """Does a model's score depend on the arithmetic it was trained in? ``twins`` maps a twin's name
    (the model's run trained again with the same seed in the other arithmetic) to the model's name;
    ``arithmetic`` gives each run's arithmetic in words. Each pair's FD gap in ``per_run`` (the
    unpooled ``evaluate`` rows) is set against the model's spread over training seeds in ``pooled``:
    within twice that spread, the arithmetic changes the model no more than a seed does, and the
    model's verdicts do not depend on which CPU or GPU trained it."""
    fd, base = _fd(per_run), _fd(pooled)
    out = []
    for twin, model in twins.items():
        for space, part in fd.groupby("space", sort=False):
            t = part.set_index("model")
            ref = base[(base.space == space) & (base.model == model)]
            if twin not in t.index or model not in t.index or ref.empty:
                continue
            a, b, spread = t.loc[model], t.loc[twin], ref.iloc[0]
            gap, n = b["mean"] - a["mean"], seeds_of(spread)
            if n < MIN_SEEDS:
                judged = f"not judged: the spread pools {count(n, 'training seed')}"
            elif abs(gap) <= 2 * spread["std"]:
                judged = "within twice the seed spread: its verdicts do not depend on the arithmetic"
            else:
                judged = "beyond twice the seed spread: its verdicts may depend on the arithmetic"
            out.append(f"{a.metric} ({space}) {model}, one seed in {arithmetic.get(model, '?')} and in "
                       f"{arithmetic.get(twin, '?')}: {fmt(a['mean'], a['std'])} vs {fmt(b['mean'], b['std'])}, "
                       f"gap {gap:+.3g} against a seed spread of {spread['std']:.3g} ({n} seeds): {judged}.")
    return out


def sampler_lines(rows: pd.DataFrame, blank: pd.DataFrame, samplers: Mapping[str, str]) -> list[str]:
    """Prior against ex-post GMM sampler, per model and feature space: ``samplers`` maps a sampler's
    row ("VAE-elbo-beta1 · GMM sampler") to its model's; ``blank`` is ``scoring.blank_frame_table``
    over the same samples (rows per run; a model's own run is the one under its name)."""
    fd, out = _fd(rows), []
    counts = blank.set_index("model")
    for sampler, model in samplers.items():
        for space, part in fd.groupby("space", sort=False):
            t = part.set_index("model")
            if sampler not in t.index or model not in t.index:
                continue
            g, p = t.loc[sampler], t.loc[model]
            v = compare(g, p)
            v = {"holds": "the GMM sampler is better", "reversed": "the prior is better"}.get(v, v)
            out.append(f"{g.metric} ({space}) {model}: prior {fmt(p['mean'], p['std'])}, GMM sampler "
                       f"{fmt(g['mean'], g['std'])}: {v}.")
        if model in counts.index and sampler in counts.index:
            a, b = counts.loc[model], counts.loc[sampler]
            out.append(f"Blank frames (pixel std under {BLANK_SHARE:.0%} of the real test images' median) of "
                       f"{model}'s own run: {int(a['blank frames'])} of {int(a.samples)} prior samples, "
                       f"{int(b['blank frames'])} of {int(b.samples)} GMM-sampler samples.")
    return out


def latent_lines(rows: pd.DataFrame, space: str, samplers: Mapping[str, str],
                 ceilings: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Each model's samplers side by side on the ruler ``space`` ("<model> · GMM sampler", "<model> ·
    latent diffusion": ``samplers`` maps each sampler's row to its model's), beside ``ceilings``
    (model -> {"FD", "FD sd"} of its reconstructions of the test images, ``scoring.reconstruction_fd``):
    how far each sampler is from the best its decoder can do, and the latent diffusion against the
    GMM under ``verdict``'s rule."""
    t = _fd(rows)
    t = t[t.space == space].set_index("model")
    out = []
    for model in dict.fromkeys(samplers.values()):
        if model not in t.index:
            continue
        own = [name for name, m in samplers.items() if m == model and name in t.index]
        parts = [f"prior {fmt(t.loc[model, 'mean'], t.loc[model, 'std'])}"]
        parts += [f"{name.removeprefix(model + ' · ')} {fmt(t.loc[name, 'mean'], t.loc[name, 'std'])}" for name in own]
        text = f"{t.loc[model, 'metric']} ({space}) {model}: " + ", ".join(parts)
        if model in ceilings:
            c = ceilings[model]
            best = min([model, *own], key=lambda n: t.loc[n, "mean"])
            text += (f"; its reconstructions of the test images, the ceiling of any sampler of its latent, "
                     f"{fmt(c['FD'], c['FD sd'])}: the best sampler ({best.removeprefix(model + ' · ')}) is "
                     f"{t.loc[best, 'mean'] / c['FD']:.2g}× the ceiling")
        gmm, ldm = f"{model} · GMM sampler", f"{model} · latent diffusion"
        if gmm in own and ldm in own:
            v = compare(t.loc[ldm], t.loc[gmm])
            v = {"holds": "the latent diffusion is better", "reversed": "the GMM sampler is better"}.get(v, v)
            text += f"; latent diffusion against the GMM sampler: {v}"
        out.append(text + ".")
    return out


def usefulness_section(rows: pd.DataFrame, usefulness: pd.DataFrame, evidence: pd.DataFrame,
                       movements: Mapping[str, Movement], descriptions: Mapping[str, str] | None = None,
                       references: Mapping[str, float] | None = None, over_represented: str | None = None,
                       label_target: float = LABEL_TARGET, posthoc: Sequence[str] = ()) -> list[str]:
    """The classifier experiment for every generator (``report.usefulness.generators_section``), in the
    fixed ruler's space, with what the data over-represents (a generator can learn a source's style
    rather than a finding)."""
    space = next(iter(dict.fromkeys(_fd(rows).space)), "cxr-classifier")
    lines = ["", "## Do synthetic images help a classifier?", ""]
    if over_represented:
        lines += [over_represented, ""]
    return lines + generators_section(usefulness, evidence, movements, rows, space, descriptions, references,
                                      label_target, posthoc)


def results_markdown(rows: pd.DataFrame, provenance_lines: Sequence[str],
                     families: Mapping[str, str | None] | None = None, usefulness: pd.DataFrame | None = None,
                     title: str = "Measured sample quality", evidence: pd.DataFrame | None = None,
                     movements: Mapping[str, Movement] | None = None,
                     generator_descriptions: Mapping[str, str] | None = None,
                     label_references: Mapping[str, float] | None = None, over_represented: str | None = None,
                     label_target: float = LABEL_TARGET, posthoc: Sequence[str] = (),
                     data_lines: Sequence[str] = (), ruler_lines: Sequence[str] = (),
                     precision_lines: Sequence[str] = (),
                     sampler_lines: Sequence[str] = (), compute_lines: Sequence[str] = (),
                     target_lines: Sequence[str] = ()) -> str:
    """One table per feature space (rows: models, calibration ladder, real reference; each metric
    "mean ± std"), the spaces' dimensions, unavailable spaces with their reasons, the ladder
    placement, the ranking only where the spaces agree, the usefulness result with its controls,
    ``data_lines`` (what the data is), ``ruler_lines`` (the shipped feature networks),
    ``precision_lines`` (``arithmetic_lines``), ``sampler_lines`` (prior vs ex-post sampler),
    ``compute_lines`` (quality against compute), ``target_lines`` (``targets``) and provenance — every
    sentence computed from the numbers."""
    lines = [f"# {title}", ""]
    if data_lines:
        lines += ["## The data", ""] + [f"- {d}" for d in data_lines] + [""]
    if ruler_lines:
        lines += ["## The rulers", ""] + [f"- {r}" for r in ruler_lines] + [""]
    lines += ["## Scores", ""]
    for space, part in _scored(rows).groupby("space", sort=False):
        lines += score_table(space, part)
    lines += score_notes(rows)
    lines += ranking_section(rows, families)
    if sampler_lines:
        lines += ["", "## Sampling the VAE family where the data is (ex-post GMM, latent diffusion)", ""]
        lines += [f"- {x}" for x in sampler_lines]
    if compute_lines:
        lines += ["", "## Quality against training compute", "",
                  "FD (cxr-classifier) at evenly spaced weight snapshots of one training run per model "
                  "(figure: figures/07_evaluation/quality_vs_compute.png).", ""]
        lines += [f"- {x}" for x in compute_lines]
    if target_lines:
        lines += ["", "## The study's quality targets", ""] + [f"- {x}" for x in target_lines]
    if precision_lines:
        lines += ["", "## Do the verdicts depend on the arithmetic?", ""] + [f"- {p}" for p in precision_lines]
    if usefulness is not None:
        lines += usefulness_section(rows, usefulness, evidence, movements or {}, generator_descriptions,
                                    label_references, over_represented, label_target, posthoc)
    lines += ["", "## Provenance", ""] + [f"- {p}" for p in provenance_lines]
    return "\n".join(lines) + "\n"


def write_results(path: str | Path, rows: pd.DataFrame, provenance_lines: Sequence[str],
                  **kwargs) -> Path:
    """Render ``results_markdown`` to ``path`` (atomically)."""
    return write_text(path, results_markdown(rows, provenance_lines, **kwargs))


def _seconds(x: float) -> str:
    if x >= 3 * 3600:
        return f"{x / 3600:,.1f} h"
    return f"{x:.1f} s" if x < 10 else f"{x:,.0f} s"


def _at_budget(curves: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Each model's latest point within ``budget`` training seconds (models with none left out)."""
    within = curves[curves.seconds <= budget]
    return within.sort_values("seconds").groupby("model", sort=False).tail(1).sort_values("FD")


def compute_lines(curves: pd.DataFrame, rows: pd.DataFrame, space: str) -> list[str]:
    """What the quality-against-compute curves say (``curves``: ``scoring.quality_curves``, columns
    model, seconds, images, FD, FD sd; ``rows``: the evaluation's rows, for the ladder's rungs in
    ``space``): which model leads at each budget where a run ended, and the budget at which each
    model first scores below each rung. The curves come from one training seed per model, so no lead
    is called settled (``verdict``)."""
    lines, said = [], None
    budgets = sorted(curves.groupby("model").seconds.max())
    for budget in budgets:
        at = _at_budget(curves, budget)
        if len(at) < 2:
            continue
        a, b = at.iloc[0], at.iloc[1]
        points = (a.model, a.seconds, b.model, b.seconds)
        if points == said:        # a run ended here, but neither leader has a new point: nothing new to say
            continue
        said = points
        gap = verdict(a.FD, a["FD sd"], b.FD, b["FD sd"], seeds=1)
        lines.append(f"Within {_seconds(budget)} of training: {a.model} leads with FD {fmt(a.FD, a['FD sd'])} "
                     f"(at {_seconds(a.seconds)}) before {b.model} {fmt(b.FD, b['FD sd'])} (at {_seconds(b.seconds)}): "
                     f"{gap}.")
    fd = rows[(rows.space == space) & rows.metric.isin(FD_METRICS) & (rows.kind == Kind.LADDER)]
    rungs = fd.sort_values("mean", ascending=False)
    for model, part in curves.groupby("model", sort=False):
        part = part.sort_values("seconds")
        passed, missed = [], []
        for _, rung in rungs.iterrows():
            below = part[part.FD < rung["mean"]]
            name = rung.model.removeprefix(LADDER)
            if below.empty:
                missed.append(name)
            else:
                b = below.iloc[0]
                passed.append(f"\"{name}\" ({fmt(rung['mean'], rung['std'])}) at {_seconds(b.seconds)} "
                              f"({b.images:,} images, iteration {b.iteration:,})")
        text = f"{model} first scores below " + ("; ".join(passed) if passed else "no rung")
        if missed:
            text += (f"; not within the measured range (up to {_seconds(part.seconds.max())}) for "
                     + ", ".join(f"\"{m}\"" for m in missed))
        lines.append(text + ".")
    if budgets:
        lines.append(crossing_line(curves, _at_budget(curves, budgets[-1]).iloc[0].model, real_floor(rows, space)))
    return lines


def real_floor(rows: pd.DataFrame, space: str) -> float | None:
    """The real-vs-real FD in ``space`` (held-out real images against the test set): the lowest FD a
    set of samples can be expected to reach; None where the rows have no such row."""
    real = rows[(rows.model == REAL) & (rows.space == space) & rows.metric.isin(FD_METRICS)]
    return float(real["mean"].iloc[0]) if len(real) else None


HORIZON = 100.0     # how far beyond the longest measured run a crossing sentence extrapolates


def crossing_line(curves: pd.DataFrame, leader: str, floor: float | None = None) -> str:
    """Whether each model's curve would pass ``leader``'s with more training: straight lines through
    each curve's last three points in log FD against log seconds, extended beyond the measured range
    and labelled as the extrapolation they are. A crossing below ``floor`` (the real-vs-real FD) is
    none: there the lines have left what any set of images scores."""
    tails = {m: trend(part.seconds, part.FD) for m, part in curves.groupby("model", sort=False)}
    lead = tails[leader]
    said = []
    for model, tail in tails.items():
        if model == leader:
            continue
        if tail is None or lead is None:
            said.append(f"{model}: too few points to draw a line")
            continue
        at = crossing(tail, lead)
        slopes = f"slope {tail.slope:.2f} against {lead.slope:.2f}"
        if at is not None and floor is not None and math.exp(lead.level) * at ** lead.slope < floor:
            said.append(f"{model}'s line meets {leader}'s only below the real-vs-real FD {floor:.3g}, where no "
                        f"images score, so it would not pass it ({slopes})")
        elif at is not None and at > HORIZON * max(tail.last, lead.last):
            said.append(f"{model} would pass {leader} only beyond {HORIZON:g}× the longest measured run, "
                        f"too far for these lines to say ({slopes})")
        elif at is not None:
            said.append(f"{model} would pass {leader} after about {_seconds(at)} of training "
                        f"({at / max(tail.last, lead.last):,.1f}× the longest measured run; {slopes})")
        elif tail.slope >= lead.slope:
            said.append(f"{model} would not pass {leader}: its line falls no faster ({slopes})")
        else:
            said.append(f"{model}'s line meets {leader}'s inside the measured range, where the points themselves "
                        f"decide ({slopes})")
    return ("Extrapolated, not measured (a straight line through each curve's last three points in log FD "
            "against log training seconds, FD ~ seconds^slope; a plateau the runs have not reached would "
            "break it): " + "; ".join(said) + ".")


VAE_FAMILIES = (Family.VAE, Family.GMVAE, Family.DIRVAE)
TARGET_RUNGS = {"vae": "16 px and back", "gan": "blur σ=1 px"}   # rungs each family's best should pass
MIN_RECALL = 0.8                                                # what the best GAN should keep


def _against(row: pd.Series, rung: pd.Series | None, name: str) -> str:
    """'LSGAN 50.0 ± 2.0 against "blur σ=1 px" 60.0 ± 1.0: met (by 10)' with the verdict's rule."""
    if rung is None:
        return f"no ladder rung \"{name}\" in this run"
    word = _target_word(row, rung)
    gap = rung["mean"] - row["mean"]
    by = (f"below it by {gap:.3g}" if gap > 0 else f"above it by {-gap:.3g} ({row['mean'] / rung['mean']:.2g}×)")
    return (f"{row.model} {fmt(row['mean'], row['std'])} against \"{name}\" {fmt(rung['mean'], rung['std'])}: "
            f"{by}; {word}")


def _target_word(row: pd.Series, rung: pd.Series) -> str:
    """"met", "missed" or the verdict's "not resolved …" for ``row`` below ``rung`` (a rung trains nothing:
    the row's training seeds decide whether it can settle)."""
    v = verdict(row["mean"], row["std"], rung["mean"], rung["std"], seeds=seeds_of(row))
    return {"holds": "met", "reversed": "missed"}.get(v, v)


def targets(rows: pd.DataFrame, space: str, families: Mapping[str, str | None] | None = None,
            curves: pd.DataFrame | None = None, solvers: Mapping[str, str] | None = None,
            seconds: Mapping[str, float] | None = None) -> list[str]:
    """The study's quality targets on the ruler ``space``, each met, missed (and by how much) or not
    resolved under ``verdict``'s rule: the best VAE-family model (any sampler) below the rung "16 px
    and back"; the best GAN below "blur σ=1 px" with recall >= 0.8; the best diffusion model ahead of
    the best VAE-family model at equal training seconds (``curves``) and within 2x the best GAN's FD;
    each few-step solver row (``solvers``: its row -> the model's own) >= 2.5x faster per sample
    (``seconds`` per image) at an FD within the spread of the model's own solver."""
    fd = _fd(rows)
    fd = fd[fd.space == space]
    sc = _scored(rows)
    ladder = sc[(sc.space == space) & sc.metric.isin(FD_METRICS) & (sc.kind == Kind.LADDER)]
    rung = {n: (part.iloc[0] if len(part) else None)
            for n in TARGET_RUNGS.values() for part in [ladder[ladder.model == LADDER + n]]}
    best = _best_per_target(fd, families)
    out = []
    if "vae" in best:
        out.append("Best VAE-family model (any sampler) below \"16 px and back\": "
                   + _against(best["vae"], rung[TARGET_RUNGS["vae"]], TARGET_RUNGS["vae"]) + ".")
    gan = best.get(Family.GAN)
    if gan is not None:
        recall = sc[(sc.space == space) & (sc.model == gan.model) & (sc.metric == "recall")]
        kept = ("no recall row" if recall.empty else
                f"recall {fmt(recall['mean'].iloc[0], recall['std'].iloc[0])}, "
                + ("at least" if recall["mean"].iloc[0] >= MIN_RECALL else "below") + f" {MIN_RECALL}")
        below = rung[TARGET_RUNGS["gan"]]
        fd_word = None if below is None else _target_word(gan, below)
        whole = ("missed" if fd_word == "missed" or (not recall.empty and recall["mean"].iloc[0] < MIN_RECALL)
                 else "met" if fd_word == "met" and not recall.empty else "not resolved")
        out.append("Best GAN below \"blur σ=1 px\" with recall >= 0.8: "
                   + _against(gan, below, TARGET_RUNGS["gan"]) + f"; {kept}; the target as a whole: {whole}.")
    diff = best.get(Family.DIFFUSION)
    if diff is not None and gan is not None:
        ratio = diff["mean"] / gan["mean"]
        out.append(f"Best diffusion model within 2× the best GAN's FD: {diff.model} {fmt(diff['mean'], diff['std'])} "
                   f"is {ratio:.2g}× {gan.model}'s {fmt(gan['mean'], gan['std'])}: "
                   + ("met" if ratio <= 2 else f"missed by a factor {ratio / 2:.2g}") + ".")
    if diff is not None and "vae" in best and curves is not None:
        curved = _best_per_target(fd[fd.model.isin(set(curves.model))], families)
        out.append(_equal_seconds(curves, curved.get(Family.DIFFUSION), curved.get("vae"),
                                  diff.model, best["vae"].model))
    for fast, own in (solvers or {}).items():
        if fast in fd.model.values and own in fd.model.values and seconds and fast in seconds and own in seconds:
            out.append(_faster(fd.set_index("model").loc[fast], fd.set_index("model").loc[own],
                               seconds[fast], seconds[own]))
    return out


MIN_SPEEDUP = 2.5     # what a few-step solver should buy per sample


def _faster(fast: pd.Series, own: pd.Series, fast_s: float, own_s: float) -> str:
    """A few-step solver against the model's own: speed-up per sample and FD within spread. The two
    rows are the same trained weights, so the subset spread is the whole of their difference's
    spread (no training seeds needed to settle it)."""
    speedup = own_s / fast_s
    v = verdict(fast["mean"], fast["std"], own["mean"], own["std"])
    same = v == "not resolved within spread" or v == "holds"
    word = "met" if speedup >= MIN_SPEEDUP and same else "missed"
    fd_said = {"holds": "better beyond the spread", "reversed": "worse beyond the spread"}.get(v, "within the spread")
    return (f"Few-step solver >= {MIN_SPEEDUP:g}× faster per sample at an FD within the spread: {fast.name} "
            f"{fast_s:.3g} s per image against {own.name}'s {own_s:.3g} s ({speedup:.3g}×), FD "
            f"{fmt(fast['mean'], fast['std'])} against {fmt(own['mean'], own['std'])} ({fd_said}): {word}.")


def _best_per_target(fd: pd.DataFrame, families: Mapping[str, str | None] | None) -> dict:
    """``_best_per_family`` with the three VAE families as one, "vae": the targets' families."""
    return _best_per_family(fd, families, key=lambda family: "vae" if family in VAE_FAMILIES else family)


def _equal_seconds(curves: pd.DataFrame, diff: pd.Series | None, vae: pd.Series | None,
                   best_diffusion: str, best_vae: str) -> str:
    """The best diffusion model with a curve against the best VAE-family model with one (``diff``,
    ``vae``: their FD rows, None where no model of the family has a curve), at the shorter of their
    two runs' budgets, each at its latest snapshot within it (a point not measured is not
    interpolated). Where a family's best model overall has no curve, the sentence says which stood in."""
    head = "Best diffusion model ahead of the best VAE-family model at equal training seconds"
    if diff is None or vae is None:
        missing = " and ".join(f for f, r in (("diffusion", diff), ("VAE-family", vae)) if r is None)
        return f"{head}: not measured (no {missing} model has a curve in this run)."
    diffusion, vae = diff.model, vae.model
    stand_in = [f"{name} for {best}, which has no curve" for name, best in ((diffusion, best_diffusion),
                                                                         (vae, best_vae)) if name != best]
    if stand_in:
        head += " (measured with the best models that have curves: " + "; ".join(stand_in) + ")"
    budget = min(curves[curves.model == m].seconds.max() for m in (diffusion, vae))
    at = _at_budget(curves[curves.model.isin([diffusion, vae])], budget).set_index("model")
    d, v = at.loc[diffusion], at.loc[vae]
    gap = verdict(d.FD, d["FD sd"], v.FD, v["FD sd"], seeds=1)
    word = {"holds": "met", "reversed": "missed"}.get(gap, gap)
    return (f"{head}: within {_seconds(budget)}, {diffusion} {fmt(d.FD, d['FD sd'])} (at {_seconds(d.seconds)}) "
            f"against {vae} {fmt(v.FD, v['FD sd'])} (at {_seconds(v.seconds)}): {word}.")
