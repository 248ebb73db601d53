"""The usefulness section of reports/results.md: do synthetic images help a classifier?

``cxrnb.evaluation.usefulness.usefulness`` trains a classifier per regime (``Regime``) at equal
gradient steps; these sentences compare each regime's macro test AUROC with training on the real
images alone, and check the controls: the duplicated real set and the blank images, which must
score chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from cxrnb.evaluation.usefulness import Regime
from cxrnb.report.numbers import count, fmt, verdict
from cxrnb.report.tables import markdown_table


def usefulness_table(macro: pd.DataFrame) -> list[str]:
    """The macro AUROC of each regime (``macro``: the "macro" rows indexed by regime) as Markdown."""
    header = ["training data", "macro AUROC ↑", "training set", "steps", "seeds"]
    cells = [[f"{regime}", fmt(r["mean"], r["std"]), f"{r['training set']}", f"{r.steps}",
              f"{r.n_seeds}"] for regime, r in macro.iterrows()]
    return markdown_table(pd.DataFrame(cells, columns=header)).splitlines()


def _change(macro: pd.DataFrame, regime: Regime) -> str:
    """A regime's macro AUROC against training on the real images alone, with its spread and verdict."""
    a, b = macro.loc[regime], macro.loc[Regime.REAL]
    d, sd = a["mean"] - b["mean"], math.hypot(a["std"], b["std"])
    v = verdict(-a["mean"], a["std"], -b["mean"], b["std"], seeds=int(min(a.n_seeds, b.n_seeds)))
    effect = {"holds": "it helps", "reversed": "it hurts",
              "not resolved within spread": "no measurable effect"}.get(v, v)
    if math.isnan(sd):
        return f"{d:+.3f} (one seed: no spread, not judged)"
    return f"{d:+.3f} ± {sd:.3f}: {effect}"


def blank_control_line(blank: pd.Series) -> str:
    """The blank control must score chance (0.5, within twice its spread or 0.05): labels without
    images carry nothing a classifier can learn."""
    ok = abs(blank["mean"] - 0.5) <= max(2 * blank["std"], 0.05)
    return (f"Control, blank images with the real labels: {fmt(blank['mean'], blank['std'])}, "
            + ("one seed: not judged." if math.isnan(blank["std"]) else
               "at chance as it must be." if ok else
               "NOT at chance: the pipeline leaks labels or the test set is too small."))


def finding_changes(table: pd.DataFrame, min_positives: int = 10) -> pd.DataFrame:
    """Per finding with at least ``min_positives`` test positives (fewer make an AUROC too noisy to
    read): real-only AUROC and each synthetic regime's change against it, with spread and verdict."""
    rows = table[(table.finding != "macro") & (table.test_positives >= min_positives)]
    real = rows[rows.regime == Regime.REAL].set_index("finding")
    cells = []
    for finding, r in real.iterrows():
        row = {"finding": finding, "test positives": int(r.test_positives), "real": fmt(r["mean"], r["std"])}
        for regime in (Regime.MIXED, Regime.PRETRAINED, Regime.RARE):
            other = rows[(rows.regime == regime) & (rows.finding == finding)]
            if len(other):
                frame = pd.DataFrame([r, other.iloc[0]], index=[Regime.REAL, regime])
                row[f"{regime} − real"] = _change(frame, regime)
        cells.append(row)
    return pd.DataFrame(cells)


def _added(macro: pd.DataFrame, regime: Regime) -> int:
    """How many synthetic images ``regime``'s training set adds to the real one (from the sizes)."""
    return int(macro.loc[regime, "n_train"] - macro.loc[Regime.REAL, "n_train"])


def usefulness_lines(table: pd.DataFrame, generator: str | None = None,
                     generator_fd: Sequence[str] = (), rare: Sequence[str] = (),
                     min_positives: int = 10) -> list[str]:
    """Macro test AUROC per training regime (``cxrnb.evaluation.usefulness.usefulness``, equal
    gradient steps), the controls, the verdicts as plain sentences with their spreads, and the
    per-finding changes for the findings with at least ``min_positives`` test positives. ``rare``:
    the findings the rare-findings regime generated images for."""
    macro = table[table.finding == "macro"].set_index("regime")
    name = generator or "synthetic"
    if not rare and "rare findings" in table:
        rare = str(table["rare findings"].iloc[0]).split(", ")
    lines = usefulness_table(macro) + [""]
    if generator_fd:
        lines += [f"Generator {name}: " + "; ".join(generator_fd) + "."]
    if {Regime.REAL, Regime.MIXED} <= set(macro.index):
        lines += [f"Adding {_added(macro, Regime.MIXED):,} {name} images to the real "
                  f"training set changes macro AUROC by {_change(macro, Regime.MIXED)} (mean ± spread "
                  f"over {int(macro.loc[Regime.REAL, 'n_seeds'])} seeds, equal gradient steps)."]
    if {Regime.REAL, Regime.PRETRAINED} <= set(macro.index):
        lines += [f"Pretraining on the {name} images, then fine-tuning on the real ones (half the steps each, "
                  f"the same steps in all) changes macro AUROC by {_change(macro, Regime.PRETRAINED)}."]
    if {Regime.REAL, Regime.RARE} <= set(macro.index):
        which = f" ({', '.join(rare)})" if rare else ""
        lines += [f"Adding {_added(macro, Regime.RARE):,} {name} images generated only for the rarest "
                  f"findings{which}, to balance the training set, changes macro AUROC by "
                  f"{_change(macro, Regime.RARE)}."]
    if Regime.DUPLICATED in macro.index:
        lines += ["Control, the real images duplicated to the same size: "
                  f"{_change(macro, Regime.DUPLICATED)}."]
    if Regime.BLANK in macro.index and Regime.SYNTHETIC in macro.index:
        lines += [synthetic_only_line(macro.loc[Regime.SYNTHETIC], macro.loc[Regime.BLANK], name)]
    if Regime.BLANK in macro.index:
        lines += [blank_control_line(macro.loc[Regime.BLANK])]
    if "test_positives" in table:
        per = finding_changes(table, min_positives)
        if len(per):
            lines += ["", f"Per finding, for the {count(len(per), 'finding')} with at least {min_positives} "
                      f"positives among the {int(table.n_test.iloc[0]):,} test images (test AUROC; change "
                      "against real only):", ""]
            lines += markdown_table(per).splitlines()
        else:
            lines += [f"No finding has {min_positives} or more test positives: no per-finding changes are read."]
    return lines


def synthetic_only_line(synth: pd.Series, blank: pd.Series, name: str) -> str:
    """Do the synthetic images carry their labels? A classifier trained on them alone is compared
    with the blank control, which carries the labels and no image: only a score above it shows
    that the images drew the findings they were asked for."""
    head = f"Trained on {name} images alone: {fmt(synth['mean'], synth['std'])}"
    diff, spread = synth["mean"] - blank["mean"], math.hypot(synth["std"], blank["std"])
    if math.isnan(spread):
        return f"{head}; blank control {fmt(blank['mean'], blank['std'])} (one seed: no spread, not judged)."
    v = verdict(-synth["mean"], synth["std"], -blank["mean"], blank["std"],
                seeds=int(min(synth.n_seeds, blank.n_seeds)))
    if v == "holds":
        return (f"{head}, above the blank control ({diff:+.3f} ± {spread:.3f}): the images carry some of "
                "the findings they were generated for.")
    if v == "reversed":
        return f"{head}, below the blank control ({diff:+.3f} ± {spread:.3f}): the images mislead the classifier."
    return (f"{head}, not distinguishable from the blank control ({diff:+.3f} ± {spread:.3f}): no sign "
            "that the images carry the findings they were generated for.")
