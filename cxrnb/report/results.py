"""reports/results.md: the measured numbers in one table, and what they say about the paper's claim.

The paper concluded by eye that the LSGAN's samples were best and the VAEs' blurry. Here that
ranking is read off the Fréchet distances in each feature space, called settled only when the gap
is more than twice the spread of the difference over repeated subsets, and stated only where every
available feature space settles it the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from cxrnb.evaluation.metrics import LADDER, REAL
from cxrnb.models import PRESETS
from cxrnb.paths import write_text

# Which way is better. MS-SSIM diversity is best near the real images' own value: lower than that
# is not "more realistic", only noisier. Density is best near 1.
DIRECTION = {"FD": "↓", "FID": "↓", "FD∞": "↓", "FID∞": "↓", "KID": "↓", "precision": "↑",
             "recall": "↑", "density": "≈ 1", "coverage": "↑", "MS-SSIM": "≈ real",
             "memorised": "≈ real"}
FD_METRICS = ("FD", "FID")        # the Fréchet distance's name: FID in Inception's space only
MS_SSIM_NOTE = ("MS-SSIM here uses 3 scales with a 7-px Gaussian window (σ 1.5) at 64 px, weights "
                "renormalised; it is not comparable with published 5-scale MS-SSIM, which needs "
                "≥ 160 px.")


def _scored(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows[rows.metric != ""].copy()
    guess = out.model.map(lambda m: "reference" if m == REAL else "model")
    out["kind"] = out["kind"].fillna(guess) if "kind" in out else guess
    return out


def family_of(model: str, families: Mapping[str, str] | None = None) -> str | None:
    """The family of a scored model: from ``families`` (model -> family, e.g. ``scoring.families``)
    where it names the model, else from its preset (``models.PRESETS``); None for neither."""
    if families and model in families:
        return families[model]
    return PRESETS[model].family if model in PRESETS else None


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt(mean: float, std: float) -> str:
    """'12.3 ± 0.45': the std to two significant digits and the mean to the same decimal place;
    below 0.001, '6.28 ± 0.16 × 10⁻⁶'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if mean != 0 and abs(mean) < 1e-3:     # e.g. FD in a space of tiny features: one shared power of 10
        e = math.floor(math.log10(abs(mean)))
        scaled = fmt(mean / 10 ** e, std / 10 ** e if std is not None else std)
        return f"{scaled} × 10{str(e).translate(SUPERSCRIPT)}"
    if std is None or math.isnan(std) or std == 0:
        return f"{mean:.4g}"
    places = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{places}f} ± {std:.{places}f}"


def verdict(a_mean: float, a_std: float, b_mean: float, b_std: float) -> str:
    """Is a lower than b (lower = better)? Settled only when the gap exceeds twice the spread of the
    difference, sqrt(a_std² + b_std²); one repeat only (no spread) is never settled."""
    spread = math.hypot(a_std, b_std)
    if math.isnan(spread) or abs(a_mean - b_mean) <= 2 * spread:
        return "not resolved within spread"
    return "holds" if a_mean < b_mean else "reversed"


def _fd(rows: pd.DataFrame) -> pd.DataFrame:
    """The models' Fréchet-distance rows (FD or FID), one per (space, model)."""
    sc = _scored(rows)
    return sc[sc.metric.isin(FD_METRICS) & (sc.kind == "model") & sc["mean"].notna()]


def ranking_sentences(rows: pd.DataFrame, families: Mapping[str, str] | None = None) -> list[str]:
    """Per feature space: does 'GAN better than VAE and GMVAE' hold on the Fréchet distance?
    Each family is represented by its best model (lowest mean)."""
    out = []
    for space, part in _fd(rows).groupby("space", sort=False):
        metric = part.metric.iloc[0]
        best = {}
        for _, r in part.sort_values("mean").iterrows():
            best.setdefault(family_of(r.model, families), r)
        if "gan" not in best:
            out.append(f"{metric} ({space}): no GAN row, so the paper's ranking cannot be checked.")
            continue
        g = best["gan"]
        bits = []
        for other in ("vae", "gmvae"):
            if other not in best:
                bits.append(f"no {other.upper()} row to compare")
                continue
            o = best[other]
            v = verdict(g["mean"], g["std"], o["mean"], o["std"])
            bits.append(f"{g.model} vs {o.model}: {v} ({fmt(g['mean'], g['std'])} vs "
                        f"{fmt(o['mean'], o['std'])})")
        out.append(f"{metric} ({space}): GAN better than VAE and GMVAE — " + "; ".join(bits) + ".")
    return out


FAMILY_NAMES = {"gan": "GAN", "vae": "VAE", "gmvae": "GMVAE", "dirvae": "Dirichlet VAE",
                "diffusion": "diffusion"}


def family_order_sentences(rows: pd.DataFrame, families: Mapping[str, str] | None = None) -> list[str]:
    """Per feature space: every family's best model (lowest FD) in order, each neighbour pair
    marked "<" where the gap exceeds twice its spread and "≈" where it does not."""
    out = []
    for space, part in _fd(rows).groupby("space", sort=False):
        best = {}
        for _, r in part.sort_values("mean").iterrows():
            best.setdefault(family_of(r.model, families), r)
        if len(best) < 2:
            continue
        ranked = list(best.items())
        text = f"{FAMILY_NAMES.get(ranked[0][0], ranked[0][0])} ({ranked[0][1].model} {fmt(ranked[0][1]['mean'], ranked[0][1]['std'])})"
        for (_, a), (f, b) in zip(ranked, ranked[1:]):
            sign = "<" if verdict(a["mean"], a["std"], b["mean"], b["std"]) == "holds" else "≈"
            text += f" {sign} {FAMILY_NAMES.get(f, f)} ({b.model} {fmt(b['mean'], b['std'])})"
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
                v = verdict(t.loc[a, "mean"], t.loc[a, "std"], t.loc[b, "mean"], t.loc[b, "std"])
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
        rungs = part[part.kind == "ladder"].sort_values("mean")
        if rungs.empty:
            continue
        bits = []
        for _, r in part[part.kind == "model"].iterrows():
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


def usefulness_lines(table: pd.DataFrame, generator: str | None = None,
                     generator_fd: Sequence[str] = ()) -> list[str]:
    """Macro test AUROC per training regime (``cxrnb.evaluation.classifier.usefulness``, equal gradient steps),
    the controls, and the verdict as a plain sentence with its spread."""
    macro = table[table.finding == "macro"].set_index("regime")
    lines = ["| training data | macro AUROC ↑ | training set | steps | seeds |", "|---|---|---|---|---|"]
    for regime, r in macro.iterrows():
        lines.append(f"| {regime} | {fmt(r['mean'], r['std'])} | {r['training set']} | {r.steps} | "
                     f"{r.n_seeds} |")
    name = generator or "synthetic"

    def change(regime: str) -> tuple[float, float, str]:
        a, b = macro.loc[regime], macro.loc["real"]
        d, sd = a["mean"] - b["mean"], math.hypot(a["std"], b["std"])
        v = verdict(-a["mean"], a["std"], -b["mean"], b["std"])
        effect = {"holds": "it helps", "reversed": "it hurts"}.get(v, "no measurable effect")
        if math.isnan(sd):
            return d, sd, f"{d:+.3f} (one seed: no spread, not judged)"
        return d, sd, f"{d:+.3f} ± {sd:.3f}: {effect}"

    lines += [""]
    if generator_fd:
        lines += [f"Generator {name}: " + "; ".join(generator_fd) + "."]
    if {"real", "real+synthetic"} <= set(macro.index):
        n = table.loc[table.regime == "real+synthetic", "training set"].iloc[0]
        lines += [f"Adding {n.split(' + ')[-1].replace(' synthetic', '')} {name} images to the real "
                  f"training set changes macro AUROC by {change('real+synthetic')[2]} (mean ± spread "
                  f"over {int(macro.loc['real', 'n_seeds'])} seeds, equal gradient steps)."]
    if "real+real (duplicated)" in macro.index:
        lines += [f"Control, the real images duplicated to the same size: {change('real+real (duplicated)')[2]}."]
    blank = [r for r in macro.index if r.startswith("blank")]
    if blank and "synthetic" in macro.index:
        lines += [synthetic_only_line(macro.loc["synthetic"], macro.loc[blank[0]], name)]
    if blank:
        b = macro.loc[blank[0]]
        ok = abs(b["mean"] - 0.5) <= max(2 * b["std"], 0.05)
        lines += [f"Control, blank images with the real labels: {fmt(b['mean'], b['std'])}, "
                  + ("one seed: not judged." if math.isnan(b["std"]) else
                     "at chance as it must be." if ok else
                     "NOT at chance: the pipeline leaks labels or the test set is too small.")]
    return lines


def synthetic_only_line(synth: pd.Series, blank: pd.Series, name: str) -> str:
    """Do the synthetic images carry their labels? A classifier trained on them alone is compared
    with the blank control, which carries the labels and no image: only a score above it shows
    that the images drew the findings they were asked for."""
    head = f"Trained on {name} images alone: {fmt(synth['mean'], synth['std'])}"
    diff, spread = synth["mean"] - blank["mean"], math.hypot(synth["std"], blank["std"])
    if math.isnan(spread):
        return f"{head}; blank control {fmt(blank['mean'], blank['std'])} (one seed: no spread, not judged)."
    v = verdict(-synth["mean"], synth["std"], -blank["mean"], blank["std"])
    if v == "holds":
        return (f"{head}, above the blank control ({diff:+.3f} ± {spread:.3f}): the images carry some of "
                "the findings they were generated for.")
    if v == "reversed":
        return f"{head}, below the blank control ({diff:+.3f} ± {spread:.3f}): the images mislead the classifier."
    return (f"{head}, not distinguishable from the blank control ({diff:+.3f} ± {spread:.3f}): no sign "
            "that the images carry the findings they were generated for.")


def results_markdown(rows: pd.DataFrame, provenance_lines: Sequence[str],
                     families: Mapping[str, str] | None = None, usefulness: pd.DataFrame | None = None,
                     title: str = "Measured sample quality", usefulness_source: str | None = None,
                     data_lines: Sequence[str] = ()) -> str:
    """One table per feature space (rows: models, calibration ladder, real reference; each metric
    "mean ± std"), the spaces' dimensions, unavailable spaces with their reasons, the ladder
    placement, the ranking only where the spaces agree, the usefulness result with its controls,
    ``data_lines`` (what the data is) and provenance — every sentence computed from the numbers."""
    sc = _scored(rows)
    order = {"model": 0, "ladder": 1, "reference": 2}
    lines = [f"# {title}", ""]
    if data_lines:
        lines += ["## The data", ""] + [f"- {d}" for d in data_lines] + [""]
    lines += ["## Scores", ""]
    for space, part in sc.groupby("space", sort=False):
        metrics = list(dict.fromkeys(part.metric))
        first = part.iloc[0]
        if "dim" in part and not pd.isna(first.get("dim", float("nan"))):
            lines += [f"### Feature space `{space}`: dimension {int(first.dim)}, effective dimension "
                      f"{first.eff_dim:.1f} (participation ratio of the real test features)", ""]
        else:
            lines += [f"### `{space}`", ""]
        header = ["model"] + [f"{m} {DIRECTION.get(m, '')}".rstrip() for m in metrics]
        header += ["n real / gen × repeats"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        models = sorted(dict.fromkeys(part.model), key=lambda m: order[part[part.model == m].kind.iloc[0]])
        for model in models:
            cell = part[part.model == model].set_index("metric")
            cells = [fmt(*cell.loc[m, ["mean", "std"]]) if m in cell.index else "–" for m in metrics]
            r = cell.iloc[0]
            lines.append("| " + " | ".join([model, *cells, f"{r.n_real} / {r.n_generated} × "
                                            f"{r.n_repeats}"]) + " |")
        lines += [""]
    lines += [f"- Row `{REAL}`: a second real test subset scored like a model: what a perfect "
              "generator would get at the same n (the small-n floor of every metric). Rows "
              f"`{LADDER}…`: real test images degraded on purpose (the calibration ladder). "
              "FD: Fréchet distance in the named feature space (FID only for Inception features); "
              "FD∞: FD extrapolated to infinitely many images (Chong & Forsyth, 2020). Precision / "
              "recall: Kynkäänniemi et al. (k = 3); density / coverage: Naeem et al. (k = 5). "
              "memorised: fraction of images closer to their nearest training image than the 5th "
              "percentile of the real test images' distances.",
              "- Spreads (±) are standard deviations over resampled subsets of ONE training run "
              "(one seed) per model: they do not include the variation between training seeds.",
              f"- {MS_SSIM_NOTE}"]
    lines += [f"- Feature space `{r.space}`: {r.note}." for _, r in rows[rows.metric == ""].iterrows()]
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
    lines += ["", "These verdicts hold for the budgets and image size in the provenance below (models "
              "trained for minutes on a CPU, at 64 px), not for the paper's settings."]
    if usefulness is not None:
        lines += ["", "## Do synthetic images help a classifier?", ""]
        if usefulness_source:
            lines += [f"Synthetic images: {usefulness_source}.", ""]
        name = usefulness_source.split(",")[0] if usefulness_source else None
        fd = _fd(rows)
        gen_fd = [f"{r.metric} ({r.space}) {fmt(r['mean'], r['std'])}"
                  for _, r in fd[fd.model == name].iterrows()] if name else []
        lines += usefulness_lines(usefulness, name, gen_fd)
    lines += ["", "## Provenance", ""] + [f"- {p}" for p in provenance_lines]
    return "\n".join(lines) + "\n"


def write_results(path: str | Path, rows: pd.DataFrame, provenance_lines: Sequence[str],
                  **kwargs) -> Path:
    """Render ``results_markdown`` to ``path`` (atomically)."""
    return write_text(path, results_markdown(rows, provenance_lines, **kwargs))
