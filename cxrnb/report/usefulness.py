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
from cxrnb.report.numbers import fmt, verdict
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


def usefulness_lines(table: pd.DataFrame, generator: str | None = None,
                     generator_fd: Sequence[str] = ()) -> list[str]:
    """Macro test AUROC per training regime (``cxrnb.evaluation.usefulness.usefulness``, equal
    gradient steps), the controls, and the verdict as a plain sentence with its spread."""
    macro = table[table.finding == "macro"].set_index("regime")
    name = generator or "synthetic"
    lines = usefulness_table(macro) + [""]
    if generator_fd:
        lines += [f"Generator {name}: " + "; ".join(generator_fd) + "."]
    if {Regime.REAL, Regime.MIXED} <= set(macro.index):
        n = table.loc[table.regime == Regime.MIXED, "training set"].iloc[0]
        lines += [f"Adding {n.split(' + ')[-1].replace(' synthetic', '')} {name} images to the real "
                  f"training set changes macro AUROC by {_change(macro, Regime.MIXED)} (mean ± spread "
                  f"over {int(macro.loc[Regime.REAL, 'n_seeds'])} seeds, equal gradient steps)."]
    if Regime.DUPLICATED in macro.index:
        lines += ["Control, the real images duplicated to the same size: "
                  f"{_change(macro, Regime.DUPLICATED)}."]
    if Regime.BLANK in macro.index and Regime.SYNTHETIC in macro.index:
        lines += [synthetic_only_line(macro.loc[Regime.SYNTHETIC], macro.loc[Regime.BLANK], name)]
    if Regime.BLANK in macro.index:
        lines += [blank_control_line(macro.loc[Regime.BLANK])]
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
