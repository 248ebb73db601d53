"""reports/results.md: the measured numbers in one table, and what they say about the paper's claim.

The paper concluded by eye that the LSGAN's samples were best and the VAEs' blurry. Here that
ranking is read off the Fréchet distances in each feature space, and called settled only when the
gap is more than twice the spread of the difference over repeated subsets.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from cxrnb.metrics import REAL

# Which way is better. MS-SSIM diversity is best near the real images' own value: lower than that
# is not "more realistic", only noisier.
DIRECTION = {"FID": "↓", "KID": "↓", "precision": "↑", "recall": "↑", "MS-SSIM": "≈ real",
             "memorised": "≈ real"}


def family_of(model: str) -> str | None:
    """'gan', 'gmvae', 'dirvae' or 'vae' from a preset name such as LSGAN, GMVAE-V8, FS-GMVAE-V1,
    DirVAE-elbo, VAE-beta0.1. The Dirichlet VAE is its own family: its prior, not only its loss, differs."""
    name = model.upper()
    return ("gan" if "GAN" in name else "gmvae" if "GMVAE" in name else "dirvae" if "DIRVAE" in name
            else "vae" if "VAE" in name else None)


def fmt(mean: float, std: float) -> str:
    """'12.3 ± 0.45': the std to two significant digits and the mean to the same decimal place."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
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


def ranking_sentences(rows: pd.DataFrame, families: Mapping[str, str] | None = None,
                      metric: str = "FID") -> list[str]:
    """Per feature space: does 'GAN better than VAE and GMVAE' hold on ``metric``?
    Each family is represented by its best model (lowest mean)."""
    fam = lambda m: (families or {}).get(m) or family_of(m)   # noqa: E731
    out = []
    df = rows[(rows.metric == metric) & (rows.model != REAL) & rows["mean"].notna()]
    for space, part in df.groupby("space", sort=False):
        best = {}
        for _, r in part.sort_values("mean").iterrows():
            best.setdefault(fam(r.model), r)
        if "gan" not in best:
            out.append(f"{space}: no GAN row, so the paper's ranking cannot be checked.")
            continue
        g = best["gan"]
        bits = []
        for other in ("vae", "gmvae"):
            if other not in best:
                bits.append(f"no {other.upper()} row to compare")
                continue
            o = best[other]
            v = verdict(g["mean"], g["std"], o["mean"], o["std"])
            bits.append(f"{g.model} vs {o.model}: {v} ({metric} {fmt(g['mean'], g['std'])} vs "
                        f"{fmt(o['mean'], o['std'])})")
        out.append(f"{space}: GAN better than VAE and GMVAE — " + "; ".join(bits) + ".")
    return out


def usefulness_lines(table: pd.DataFrame) -> list[str]:
    """Macro test AUROC per training regime (``cxrnb.classifier.usefulness``) and whether adding
    synthetic images helped, judged like the ranking (gap beyond twice the spread)."""
    macro = table[table.finding == "macro"].set_index("regime")
    lines = ["| training data | macro AUROC ↑ | n real + synthetic | seeds |", "|---|---|---|---|"]
    for regime, r in macro.iterrows():
        lines.append(f"| {regime} | {fmt(r['mean'], r['std'])} | {r.n_real} + {r.n_synthetic} | "
                     f"{r.n_seeds} |")
    if {"real", "real+synthetic"} <= set(macro.index):
        a, b = macro.loc["real+synthetic"], macro.loc["real"]
        v = verdict(-a["mean"], a["std"], -b["mean"], b["std"])   # higher AUROC is better
        lines += ["", f"Adding synthetic images helps: {v}."]
    return lines


def results_markdown(rows: pd.DataFrame, provenance_lines: Sequence[str],
                     families: Mapping[str, str] | None = None, usefulness: pd.DataFrame | None = None,
                     title: str = "Measured sample quality", usefulness_source: str | None = None) -> str:
    """One table, a row per model, each metric "mean ± std" per feature space, the counts used, the
    unavailable feature spaces with their reasons, and the ranking verdicts computed from the numbers;
    with ``usefulness`` (``cxrnb.classifier.usefulness``) also the classifier-augmentation result, and
    ``usefulness_source`` naming the generator behind it."""
    scored = rows[rows.metric != ""]
    cols = list(dict.fromkeys(zip(scored.space, scored.metric)))
    models = list(dict.fromkeys(scored.model))
    models = [m for m in models if m != REAL] + [m for m in models if m == REAL]
    header = ["model"] + [f"{m} ({s}) {DIRECTION.get(m, '')}".rstrip() for s, m in cols]
    header += ["n real / gen × repeats"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        part = scored[scored.model == model].set_index(["space", "metric"])
        cells = [fmt(*part.loc[c, ["mean", "std"]]) if c in part.index else "–" for c in cols]
        first = part.iloc[0]
        counts = f"{first.n_real} / {first.n_generated} × {first.n_repeats}"
        lines.append("| " + " | ".join([model, *cells, counts]) + " |")
    lines += ["", f"- Row `{REAL}`: a second real test subset scored like a model, what a perfect "
              "generator would get at the same n. ↓ lower is better, ↑ higher is better, "
              "≈ real: best close to that row. MS-SSIM: mean similarity of random pairs within "
              "the set (lower = more diverse). memorised: fraction of images closer to their "
              "nearest training image than the real test images' 5th percentile (evaluate's "
              "`quantile`) of that distance."]
    lines += [f"- Feature space `{r.space}`: {r.note}." for _, r in rows[rows.metric == ""].iterrows()]
    lines += ["", "## Does the paper's ranking hold?", ""]
    lines += [f"- {s}" for s in ranking_sentences(rows, families)] or ["- no FID rows."]
    if usefulness is not None:
        lines += ["", "## Do synthetic images help a classifier?", ""]
        if usefulness_source:
            lines += [f"Synthetic images: {usefulness_source}.", ""]
        lines += usefulness_lines(usefulness)
    lines += ["", "## Provenance", ""] + [f"- {p}" for p in provenance_lines]
    return "\n".join(lines) + "\n"


def write_results(path: str | Path, rows: pd.DataFrame, provenance_lines: Sequence[str],
                  **kwargs) -> Path:
    """Render ``results_markdown`` to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(results_markdown(rows, provenance_lines, **kwargs))
    os.replace(tmp, path)
    return path
