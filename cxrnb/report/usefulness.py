"""The usefulness section of reports/results.md: do synthetic images help a classifier?

``cxrnb.evaluation.usefulness.usefulness`` trains a classifier per regime (``Regime``) at equal
gradient steps; these sentences compare each regime's macro test AUROC with training on the real
images alone, and check the controls: the duplicated real set and the blank images, which must
score chance. With several generators (``generators_section``), each generator's label evidence
comes first (``cxrnb.evaluation.label_evidence``: a classifier cannot learn a finding from images
that do not show it), then one table of every regime with the controls once, each generator's
sentences, and what each generator that helps nowhere lacked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from cxrnb.evaluation.label_evidence import Movement
from cxrnb.evaluation.usefulness import MACRO, Regime
from cxrnb.report.numbers import count, fmt, verdict
from cxrnb.report.tables import markdown_table


def usefulness_table(macro: pd.DataFrame) -> list[str]:
    """The macro AUROC of each regime (``macro``: the "macro" rows indexed by regime) as Markdown."""
    header = ["training data", "macro AUROC ↑", "training set", "steps", "seeds"]
    cells = [[f"{regime}", fmt(r["mean"], r["std"]), f"{r['training set']}", f"{r.steps}",
              f"{r.n_seeds}"] for regime, r in macro.iterrows()]
    return markdown_table(pd.DataFrame(cells, columns=header)).splitlines()


def gap(row: pd.Series, ref: pd.Series, column: str = "change") -> tuple[float, float, str]:
    """``row``'s score minus ``ref``'s, its spread and the verdict word ("holds": above, "reversed":
    below, else not resolved): from the (paired) differences ``evaluation.usefulness.summarise`` put in
    ``column`` / ``column_std``, or, for a table without them, from the two independent spreads."""
    if column in row and not pd.isna(row[column]):
        d, sd = float(row[column]), float(row[f"{column}_std"])
    else:
        d, sd = row["mean"] - ref["mean"], math.hypot(row["std"], ref["std"])
    return d, sd, verdict(-d, sd, 0.0, 0.0, seeds=int(min(row.n_seeds, ref.n_seeds)))


def _change(macro: pd.DataFrame, regime: Regime) -> str:
    """A regime's macro AUROC against training on the real images alone, with its spread and verdict."""
    d, sd, v = gap(macro.loc[regime], macro.loc[Regime.REAL])
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
                     min_positives: int = 10, controls: bool = True, with_table: bool = True) -> list[str]:
    """Macro test AUROC per training regime (``cxrnb.evaluation.usefulness.usefulness``, equal
    gradient steps), the controls, the verdicts as plain sentences with their spreads, and the
    per-finding changes for the findings with at least ``min_positives`` test positives. ``rare``:
    the findings the rare-findings regime generated images for. ``controls``: also the control
    sentences; ``with_table``: start with the macro table (off where ``overview_table`` has it)."""
    macro = table[table.finding == "macro"].set_index("regime")
    name = generator or "synthetic"
    if not rare and "rare findings" in table:
        rare = str(table["rare findings"].iloc[0]).split(", ")
    lines = usefulness_table(macro) + [""] if with_table else []
    if generator_fd:
        lines += [f"Generator {name}: " + "; ".join(generator_fd) + "."]
    if {Regime.REAL, Regime.MIXED} <= set(macro.index):
        lines += [f"Adding {_added(macro, Regime.MIXED):,} {name} images to the real "
                  f"training set changes macro AUROC by {_change(macro, Regime.MIXED)} (mean over "
                  f"{int(macro.loc[Regime.REAL, 'n_seeds'])} seeds ± the spread of one seed on one test draw, "
                  "equal gradient steps)."]
    if {Regime.REAL, Regime.PRETRAINED} <= set(macro.index):
        lines += [f"Pretraining on the {name} images, then fine-tuning on the real ones (half the steps each, "
                  f"the same steps in all) changes macro AUROC by {_change(macro, Regime.PRETRAINED)}."]
    if {Regime.REAL, Regime.RARE} <= set(macro.index):
        which = f" ({', '.join(rare)})" if rare else ""
        lines += [f"Adding {_added(macro, Regime.RARE):,} {name} images generated only for the rarest "
                  f"findings{which}, to balance the training set, changes macro AUROC by "
                  f"{_change(macro, Regime.RARE)}."]
    if Regime.DUPLICATED in macro.index and controls:
        lines += ["Control, the real images duplicated to the same size: "
                  f"{_change(macro, Regime.DUPLICATED)}."]
    if Regime.BLANK in macro.index and Regime.SYNTHETIC in macro.index:
        lines += [synthetic_only_line(macro.loc[Regime.SYNTHETIC], macro.loc[Regime.BLANK], name)]
    if Regime.BLANK in macro.index and controls:
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
    diff, spread, v = gap(synth, blank, "vs_blank")
    if math.isnan(spread):
        return f"{head}; blank control {fmt(blank['mean'], blank['std'])} (one seed: no spread, not judged)."
    if v == "holds":
        return (f"{head}, above the blank control ({diff:+.3f} ± {spread:.3f}): the images carry some of "
                "the findings they were generated for.")
    if v == "reversed":
        return f"{head}, below the blank control ({diff:+.3f} ± {spread:.3f}): the images mislead the classifier."
    return (f"{head}, not distinguishable from the blank control ({diff:+.3f} ± {spread:.3f}): no sign "
            "that the images carry the findings they were generated for.")


# --- several generators: label evidence first, then usefulness, then what each lacked --------------

LABEL_TARGET = 0.65      # the study's target: images read at this ruler AUROC for the labels they were made for
CHANCE = 0.5
REAL_ROW = "real (held-out)"
HELD_OUT = "real test images (held out)"
TRAINING = "real training images (a copier's score)"


def _metric(rows: pd.DataFrame, model: str, space: str, metric: str) -> pd.Series | None:
    """The pooled score row of ``model`` for (space, metric), or None where it was not scored."""
    hit = rows[(rows.model == model) & (rows.space == space) & (rows.metric == metric)]
    return hit.iloc[0] if len(hit) else None


def _cell(r: pd.Series | None) -> str:
    return "–" if r is None else fmt(r["mean"], r["std"])


def _macro(table: pd.DataFrame, generator: str) -> pd.DataFrame:
    """The macro rows of one generator's regimes with the shared controls, indexed by regime."""
    part = table[(table.finding == "macro") & table.generator.isin(["", generator])]
    return part.set_index("regime")


def _evidence(evidence: pd.DataFrame, generator: str) -> pd.Series:
    return evidence[(evidence.generator == generator) & (evidence.finding == "macro")].iloc[0]


def evidence_table(evidence: pd.DataFrame, movements: Mapping[str, Movement], rows: pd.DataFrame, space: str,
                   references: Mapping[str, float] | None = None, posthoc: Sequence[str] = ()) -> list[str]:
    """One row per generator: how far its label moves the image (against a latent; a post-hoc
    labelled model chooses, it is not conditioned), the ruler's AUROC on its images for their own
    labels, its FD and recall in ``space``, its memorised fraction; then the ``references`` (name ->
    the ruler's AUROC on real images: ``HELD_OUT``, ``TRAINING``)."""
    macro = evidence[evidence.finding == "macro"].set_index("generator")
    header = ["images", "label change ÷ latent change", "ruler AUROC, own labels ↑", f"FD ({space}) ↓",
              "recall ↑", "memorised ≈ real", "synthetic sets × training seeds"]
    cells = []
    for g, e in macro.iterrows():
        m = movements.get(g)
        moved = (f"{m.label:.3f} ÷ {m.latent:.3f} = {m.ratio:.2f}" if m else
                 "– (chosen, not conditioned)" if g in posthoc else "–")
        cells.append([g, moved, fmt(e["mean"], e["std"]), _cell(_metric(rows, g, space, "FD")),
                      _cell(_metric(rows, g, space, "recall")), _cell(_metric(rows, g, "pixel", "memorised")),
                      f"{int(e.n_sets)} × {int(e.get('training runs', 1))}"])
    for name, auroc in (references or {}).items():
        real = REAL_ROW if name == HELD_OUT else None
        cells.append([f"{name} (reference)", "–", f"{auroc:.3f}"]
                     + [_cell(_metric(rows, real, sp, k)) if real else "–"
                        for sp, k in ((space, "FD"), (space, "recall"), ("pixel", "memorised"))] + ["–"])
    return markdown_table(pd.DataFrame(cells, columns=header)).splitlines()


def evidence_line(generator: str, evidence: pd.DataFrame, movement: Movement | None,
                  target: float = LABEL_TARGET, posthoc: bool = False) -> str:
    """Whether the ruler sees the requested findings in ``generator``'s images (its macro AUROC against
    chance by the verdict rule, and against ``target``), and how far the label moves the image; for a
    post-hoc labelled model, why its AUROC is not independent evidence."""
    e = _evidence(evidence, generator)
    sets = f"{int(e.n_sets)} synthetic sets"
    if math.isnan(e["std"]):
        seen = "one synthetic set: not judged against chance"
    elif e["mean"] - CHANCE > 2 * e["std"]:
        seen = f"above chance beyond twice its spread over {sets}"
    else:
        seen = f"not distinguishable from chance over {sets}"
    text = (f"{generator}: the ruler reads the findings its images were generated for at macro AUROC "
            f"{fmt(e['mean'], e['std'])}, {seen}; it {'meets' if e['mean'] >= target else 'misses'} the "
            f"{target} target")
    if movement is not None:
        text += (f"; switching the label with the latent held fixed changes the image by {movement.ratio:.2f}× "
                 "what another latent does")
    if posthoc:
        text += ("; its labels were chosen among its samples by a labeller trained on the same real images as "
                 "the ruler, so this AUROC partly measures how far two such networks agree, not only what the "
                 "images show")
    return text + "."


def overview_table(table: pd.DataFrame) -> list[str]:
    """Every regime of every generator, and the controls once: macro test AUROC and the change against
    real images alone (synthetic images alone: against the blank control), with its verdict."""
    header = ["training data", "generator", "macro AUROC ↑", "change against real (synthetic alone: against blank)",
              "training set", "steps", "seeds"]
    cells = []
    for g in dict.fromkeys(table.generator):
        macro = _macro(table, g)
        for regime, r in macro[macro.generator == g].iterrows():
            change = ("–" if regime in (Regime.REAL, Regime.BLANK) else
                      _against_blank(macro) if regime == Regime.SYNTHETIC else _change(macro, regime))
            cells.append([f"{regime}", g or "(none: control)", fmt(r["mean"], r["std"]), change,
                          f"{r['training set']}", f"{r.steps}", f"{r.n_seeds}"])
    return markdown_table(pd.DataFrame(cells, columns=header)).splitlines()


def _against_blank(macro: pd.DataFrame) -> str:
    """Synthetic images alone against the blank control (labels without images), with its verdict."""
    d, sd, v = gap(macro.loc[Regime.SYNTHETIC], macro.loc[Regime.BLANK], "vs_blank")
    if math.isnan(sd):
        return f"{d:+.3f} (one seed: no spread, not judged)"
    return f"{d:+.3f} ± {sd:.3f}: " + {"holds": "above blank", "reversed": "below blank",
                                       "not resolved within spread": "not distinguishable"}.get(v, v)


def _helps(macro: pd.DataFrame) -> list[Regime]:
    """The synthetic regimes whose change against real is settled upwards."""
    return [regime for regime in (Regime.MIXED, Regime.PRETRAINED, Regime.RARE)
            if regime in macro.index and _change(macro, regime).endswith("it helps")]


def lacks_line(generator: str, table: pd.DataFrame, evidence: pd.DataFrame, rows: pd.DataFrame,
               space: str, target: float = LABEL_TARGET) -> str:
    """For a generator that helps in no regime: what its images lack, each computed — label evidence
    (ruler AUROC below ``target``), diversity (recall under half the held-out real images'), and
    whether it copies training images (memorised fraction above the real images' beyond twice the
    spread)."""
    helped = _helps(_macro(table, generator))
    if helped:
        return f"{generator} helps in: {', '.join(map(str, helped))}."
    e = _evidence(evidence, generator)
    lacks, has = [], []
    (lacks if e["mean"] < target else has).append(
        f"label evidence (ruler AUROC {fmt(e['mean'], e['std'])} against the {target} target)")
    rec, real_rec = _metric(rows, generator, space, "recall"), _metric(rows, REAL_ROW, space, "recall")
    if rec is not None and real_rec is not None:
        (lacks if rec["mean"] < real_rec["mean"] / 2 else has).append(
            f"diversity (recall {fmt(rec['mean'], rec['std'])} against {fmt(real_rec['mean'], real_rec['std'])} "
            "for held-out real images; lacking below half of it)")
    mem, real_mem = _metric(rows, generator, "pixel", "memorised"), _metric(rows, REAL_ROW, "pixel", "memorised")
    if mem is not None and real_mem is not None:
        copies = mem["mean"] - real_mem["mean"] > 2 * math.hypot(mem["std"], real_mem["std"])
        (lacks if copies else has).append(
            f"{'originality' if copies else 'no copying'} (memorised {fmt(mem['mean'], mem['std'])} against "
            f"{fmt(real_mem['mean'], real_mem['std'])} for held-out real images)")
    text = f"{generator} helps in no regime. Lacks: {'; '.join(lacks) if lacks else 'none of the measured'}"
    return text + (f". Has: {'; '.join(has)}." if has else ".")


def usefulness_target(table: pd.DataFrame, evidence: pd.DataFrame, target: float = LABEL_TARGET,
                      posthoc: Sequence[str] = ()) -> str:
    """The study's target: a generator whose synthetic-only classifier beats the blank control beyond
    twice the combined spread and whose images read at ruler AUROC >= ``target`` for their labels.
    A post-hoc labelled generator that meets it is named with its caveat (its labeller and the
    ruler learnt from the same images)."""
    shown = []
    for g in [g for g in dict.fromkeys(table.generator) if g]:
        macro = _macro(table, g)
        if Regime.SYNTHETIC not in macro.index or Regime.BLANK not in macro.index:
            continue
        s, b = macro.loc[Regime.SYNTHETIC], macro.loc[Regime.BLANK]
        beats = gap(s, b, "vs_blank")[2] == "holds"
        a = _evidence(evidence, g)
        shown.append((g, beats, a["mean"] >= target, s, b, a))
    met = [g + (" (labelled post hoc: its labeller and the ruler learnt from the same images)" if g in posthoc else "")
           for g, beats, reads, *_ in shown if beats and reads]
    head = (f"A generator whose synthetic-only classifier beats the blank control beyond twice the combined spread "
            f"and whose images read at ruler AUROC >= {target} for their own labels: ")
    if met:
        return head + f"met by {', '.join(met)}."
    parts = [f"{g} synthetic-only {fmt(s['mean'], s['std'])} vs blank {fmt(b['mean'], b['std'])} "
             f"({'beats it' if beats else 'does not beat it'}), ruler AUROC {fmt(a['mean'], a['std'])}"
             for g, beats, _, s, b, a in shown]
    return head + "missed (" + "; ".join(parts) + ")."


def generators_section(table: pd.DataFrame, evidence: pd.DataFrame, movements: Mapping[str, Movement],
                       rows: pd.DataFrame, space: str, descriptions: Mapping[str, str] | None = None,
                       references: Mapping[str, float] | None = None, target: float = LABEL_TARGET,
                       posthoc: Sequence[str] = (), min_positives: int = 10) -> list[str]:
    """The usefulness experiment for several generators (``cxrnb.study.scoring.synthetic_usefulness``):
    what each generator is, whether its images carry their labels, every regime's macro AUROC with
    the controls once, each generator's sentences and per-finding changes, what each lacked where it
    helps nowhere, and the study's target."""
    gens = [g for g in dict.fromkeys(table.generator) if g]
    lines = [f"- {descriptions[g]}." for g in gens if descriptions and g in descriptions]
    lines += ["", "### Label evidence: do the images carry the labels they were generated for?", ""]
    lines += evidence_table(evidence, movements, rows, space, references, posthoc)
    lines += [""] + [f"- {evidence_line(g, evidence, movements.get(g), target, g in posthoc)}" for g in gens]
    macro = table[table.finding == MACRO]
    blank_seeds = macro[macro.regime == Regime.BLANK].n_seeds
    more = (f" The blank control has {int(blank_seeds.iloc[0])} seeds (its classifiers learn nothing, so their "
            "scores vary most between seeds): synthetic-only is read against it paired by draw only, the "
            "difference of the means ± both seed spreads and the spread of the differences over the draws."
            if len(blank_seeds) and int(blank_seeds.iloc[0]) != int(macro.n_seeds.min()) else "")
    lines += ["", "### Usefulness: macro test AUROC on the real test images, equal gradient steps", "",
              "Each ± is the spread of one classifier (one seed) scored on one bootstrap draw of the test "
              "patients; a change is read from differences paired by seed and draw." + more, ""]
    lines += overview_table(table)
    for i, g in enumerate(gens):
        fd = _metric(rows, g, space, "FD")
        lines += ["", f"#### {g}", ""]
        lines += usefulness_lines(table[table.generator.isin(["", g])], g,
                                  [f"FD ({space}) {_cell(fd)}"] if fd is not None else [],
                                  min_positives=min_positives, controls=i == 0, with_table=False)
    lines += ["", "### What each generator lacked", ""]
    lines += [f"- {lacks_line(g, table, evidence, rows, space, target)}" for g in gens]
    lines += [f"- {usefulness_target(table, evidence, target, posthoc)}"]
    return lines
