"""Two runs of the study side by side: does a rerun on another machine say the same?

A verdict counts only if it survives a rerun (another seed, the other precision path, another CPU).
``cxrnb compare A B`` reads two reports folders made by ``make reproduce`` and checks the two things a
rerun must keep:

- **the verdict sentences** of ``results.md``, with every number masked: "holds", "not resolved",
  the family order, "no measurable effect" must read the same; the numbers inside them may move;
- **every FD in the metrics table** (ladder rungs first: the ruler itself), by the one rule the
  reports settle gaps with (``numbers.verdict``): two runs agree on a value when they differ by no more
  than twice the spread of the difference, sqrt(sd_a² + sd_b²).

Sentences are compared section by section and clause by clause (split at "; "), so one moved clause
of a long line does not hide that the rest agree; table rows are compared whole, masked like the
sentences (the usefulness tables hold verdicts too). Provenance is left out: it names the machine,
which differs by design. A row of the metrics table present in one run only is a difference. Two
kinds of differing clause are listed but do not decide: those indexed by measured training seconds
(another machine's speed puts other snapshots in each budget), and the ladder placements of models of
one training seed (results.md itself settles nothing on them).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrnb.errors import CxrnbError
from cxrnb.report.index import read_index
from cxrnb.report.numbers import MIN_SEEDS, fmt

RESULTS = "results.md"
# FDs of the same images by the same shipped ruler on two CPUs differ in the 7th digit (float32 features
# summed in another order): a value without a spread agrees within this fraction of itself
ROUND_OFF = 1e-6
METRICS = Path("figures") / "07_evaluation" / "metrics_pooled.csv"
UNCOMPARED = ("## Provenance",)     # sections that describe the run, not what it found
# sections indexed by measured training seconds: a machine twice as fast puts other snapshots in each
# budget and extrapolates from other points, so these differ between machines of different speeds by
# design; they are listed, and left out of whether the runs agree
TIMED = ("## Quality against training compute",)
# placements of single models on the ladder: one of a model trained with fewer than MIN_SEEDS seeds is
# a reading, not a verdict (results.md settles no gap involving such a model; a rerun on another CPU
# trains another model from the same seed), so it is listed and does not decide either
PLACED = ("## Where the models sit on the calibration ladder",)
_SPACE_PREFIX = re.compile(r"^(?:- )?[^:(]+\([^)]*\): ")     # '- FD (cxr-classifier): ', before a line's first clause

# A number as the reports print one: '-0.018', '1,326', '674 ± 24', '6.28 ± 0.16 × 10⁻⁶', '2.93×',
# '1.53e+03'. Not a digit inside a name ('VAE-beta0.002', 'GMVAE-V8', 'σ=1 px'): the character before
# it is no letter, digit, dot or '=', nor a hyphen after one ('COVID-19').
_DECIMAL = r"\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?"
NUMBER = re.compile(rf"(?<![\w.=])(?<!\w-)[-−+]?{_DECIMAL}(?:\s*±\s*{_DECIMAL})?(?:\s*×\s*10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)?")


def mask(text: str) -> str:
    """``text`` with every number replaced by '#', so two runs' sentences compare by their words."""
    return NUMBER.sub("#", text)


@dataclass(frozen=True)
class Clause:
    """One clause of ``results.md``: its section heading and its text as printed."""

    section: str
    text: str

    @property
    def masked(self) -> tuple[str, str]:
        return mask(self.section), mask(self.text)


def clauses(results_md: str) -> list[Clause]:
    """The sentences of ``results.md`` outside provenance, split into clauses at '; ', and its table
    rows, whole. A clause's section is its path of headings below the title ('## A › ### B'), so a
    subsection is judged by the section it sits in."""
    out, path = [], []
    for line in results_md.splitlines():
        line = line.strip()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            path = [h for h in path if len(h) - len(h.lstrip("#")) < level] + [line] * (level > 1)
            continue
        section = " › ".join(path)
        if not line or line.startswith("_") or section.startswith(UNCOMPARED):
            continue
        out += [Clause(section, line)] if line.startswith("|") else [Clause(section, p) for p in line.split("; ")]
    return out


def _by_section(cs: list[Clause]) -> dict[str, list[Clause]]:
    """Clauses by their section, its numbers masked (a heading may hold one: 'effective dimension 9.8')."""
    out: dict[str, list[Clause]] = {}
    for c in cs:
        out.setdefault(mask(c.section), []).append(c)
    return out


def differing_blocks(ca: list[Clause], cb: list[Clause]) -> list[tuple[list[Clause], list[Clause]]]:
    """The blocks of clauses that differ (A's, B's), diffed section by section so that each block
    lies in one section (a block spanning two would be judged by the first one's)."""
    sa, sb = _by_section(ca), _by_section(cb)
    out = []
    for section in dict.fromkeys([*sa, *sb]):        # A's order, then the sections only B has
        xa, xb = sa.get(section, []), sb.get(section, [])
        matcher = difflib.SequenceMatcher(a=[c.masked for c in xa], b=[c.masked for c in xb], autojunk=False)
        out += [(xa[i1:i2], xb[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]
    return out


@dataclass(frozen=True)
class Value:
    """One FD of the metrics table in both runs, and whether they agree."""

    space: str
    row: str
    kind: str
    a: tuple[float, float]
    b: tuple[float, float]
    seeds: int | None = None        # training seeds behind the row (the fewer of the two runs')

    @property
    def gap(self) -> float:
        return self.b[0] - self.a[0]

    @property
    def spread(self) -> float:
        """sqrt(sd_a² + sd_b²); a row without a spread (NaN: one value) counts as 0."""
        return math.hypot(*(0.0 if math.isnan(sd) else sd for sd in (self.a[1], self.b[1])))

    @property
    def relative_gap(self) -> float:
        return abs(self.gap) / max(abs(self.a[0]), abs(self.b[0]), 1e-300)

    @property
    def agrees(self) -> bool:
        if math.isnan(self.a[0]) or math.isnan(self.b[0]):
            return math.isnan(self.a[0]) and math.isnan(self.b[0])
        return abs(self.gap) <= 2 * self.spread or self.relative_gap <= ROUND_OFF


def _timed(block: tuple[list[Clause], list[Clause]]) -> bool:
    """Is a differing block (A's clauses, B's) in a section indexed by measured seconds?"""
    a, b = block
    return (a or b)[0].section.startswith(TIMED)


def placed_model(clause: Clause, models: list[str]) -> str | None:
    """The model a ladder placement clause places ('DirVAE-elbo 1225 ± 76: between …'), the longest
    name that fits ('DirVAE-elbo · GMM sampler' before 'DirVAE-elbo'); None outside that section."""
    if not clause.section.startswith(PLACED):
        return None
    text = _SPACE_PREFIX.sub("", clause.text)
    return max((m for m in models if text.startswith(m + " ")), key=len, default=None)


@dataclass
class Comparison:
    """What two runs share: their clauses (masked), and their FDs value by value."""

    runs: tuple[str, str]
    n_clauses: tuple[int, int]
    differing: list[tuple[list[Clause], list[Clause]]] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    only_in: list[tuple[str, str, str]] = field(default_factory=list)   # (space, row, 'A' or 'B')

    @property
    def seeds(self) -> dict[str, int]:
        """Each model's training seeds, the fewest of its rows' (1 where a row does not say)."""
        out: dict[str, int] = {}
        for v in self.values:
            if v.kind == "model":
                out[v.row] = min(out.get(v.row, v.seeds or 1), v.seeds or 1)
        return out

    @property
    def n_same(self) -> int:
        return self.n_clauses[0] - sum(len(a) for a, _ in self.differing)

    def one_seed(self, block: tuple[list[Clause], list[Clause]]) -> bool:
        """Is a differing block made only of ladder placements of models of fewer than MIN_SEEDS seeds?"""
        seeds = self.seeds
        placed = [placed_model(c, list(seeds)) for c in block[0] + block[1]]
        return all(m is not None and seeds[m] < MIN_SEEDS for m in placed)

    def undecided(self, block: tuple[list[Clause], list[Clause]]) -> str:
        """Why a differing block does not decide whether the runs agree ('' where it does)."""
        if _timed(block):
            return "indexed by measured seconds: differs with the machine's speed by design"
        if self.one_seed(block):
            return (f"a placement of a model of fewer than {MIN_SEEDS} training seeds: a reading, which "
                    "results.md settles nothing on")
        return ""

    @property
    def verdicts_differing(self) -> list[tuple[list[Clause], list[Clause]]]:
        """The differing clauses that decide: outside the sections indexed by measured seconds, and
        not the ladder placements of models of one training seed."""
        return [block for block in self.differing if not self.undecided(block)]

    @property
    def agrees(self) -> bool:
        return not self.verdicts_differing and not self.only_in and all(v.agrees for v in self.values)


def _run_words(reports: Path) -> str:
    """'commit 191f4b7, fp32 on AMD EPYC, …' from the index (every notebook's, where they differ)."""
    runs = read_index(reports).values()

    def words(key: str) -> str:
        return ", ".join(sorted({getattr(r, key) for r in runs if getattr(r, key)})) or "?"
    return f"{reports}: commit {words('commit')}, {words('precision')} on {words('machine')}"


def _fds(reports: Path) -> pd.DataFrame:
    path = reports / METRICS
    if not path.is_file():
        raise CxrnbError(f"{path} not found: compare two reports folders written by `make reproduce`")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CxrnbError(f"{path} is empty: compare two reports folders written by `make reproduce`") from None
    fds = df[(df.metric == "FD") & df.kind.isin(["ladder", "model", "reference"])].set_index(["space", "model"])
    if not fds.index.is_unique:
        twice = ", ".join(f"{space} {model}" for space, model in fds.index[fds.index.duplicated()].unique())
        raise CxrnbError(f"{path}: an FD row appears twice ({twice}): not a table `make reproduce` wrote")
    return fds


def compare(a: str | Path, b: str | Path) -> Comparison:
    """Compare the reports folders ``a`` and ``b`` (see the module docstring for the rules)."""
    a, b = Path(a), Path(b)
    texts = []
    for reports in (a, b):
        if not (reports / RESULTS).is_file():
            raise CxrnbError(f"{reports / RESULTS} not found: compare two reports folders written by `make reproduce`")
        texts.append(clauses((reports / RESULTS).read_text()))
    ca, cb = texts
    out = Comparison(runs=(_run_words(a), _run_words(b)), n_clauses=(len(ca), len(cb)))
    out.differing = differing_blocks(ca, cb)
    fa, fb = _fds(a), _fds(b)
    out.only_in = [(*key, "A") for key in fa.index.difference(fb.index)] + \
                  [(*key, "B") for key in fb.index.difference(fa.index)]
    for key in fa.index.intersection(fb.index):
        ra, rb = fa.loc[key], fb.loc[key]
        seeds = [r.n_seeds for r in (ra, rb) if ra.kind == "model" and pd.notna(r.n_seeds)]
        out.values.append(Value(space=key[0], row=key[1], kind=ra.kind, a=(float(ra["mean"]), float(ra["std"])),
                                b=(float(rb["mean"]), float(rb["std"])), seeds=int(min(seeds)) if seeds else None))
    order = {"ladder": 0, "reference": 1, "model": 2}
    out.values.sort(key=lambda v: (order[v.kind], v.space))
    return out


def items_only_in(a: str, b: str) -> tuple[list[str], list[str]]:
    """The items of two comma-separated lists (e.g. the settled pairs) found in one only, by their
    masked words: which pair a long list gained or lost. Nothing where the two share no item (two
    different sentences, not one list that changed), or where neither has three items (a sentence
    with a comma, not a list)."""
    ia, ib = a.rstrip(".").split(", "), b.rstrip(".").split(", ")
    ma, mb = [mask(x) for x in ia], [mask(x) for x in ib]
    if not set(ma) & set(mb) or max(len(ia), len(ib)) < 3:
        return [], []
    return [x for x, m in zip(ia, ma) if m not in mb], [x for x, m in zip(ib, mb) if m not in ma]


def margins(c: Comparison, pair: str) -> str:
    """For a pair 'X < Y' (lower FD is better) that one run settled and the other did not: its gap
    as a multiple of the settling threshold (twice the combined spread) in each run and space, e.g.
    'random-init: 1.16× in A, 0.88× in B'; near 1 in both, the verdict sat on its threshold."""
    better, sep, worse = pair.partition(" < ")
    if not sep:
        return ""
    rows = {(v.space, v.row): v for v in c.values}
    out = []
    for space in dict.fromkeys(v.space for v in c.values):
        x, y = rows.get((space, better)), rows.get((space, worse))
        if x is None or y is None:
            continue
        ratio = [(y_[0] - x_[0]) / (2 * math.hypot(x_[1], y_[1])) for x_, y_ in ((x.a, y.a), (x.b, y.b))]
        out.append(f"{space}: {ratio[0]:.2f}× in A, {ratio[1]:.2f}× in B")
    return f"{pair}: gap ÷ settling threshold, " + "; ".join(out) if out else ""


def _tally(values: list[Value]) -> str:
    return f"{sum(v.agrees for v in values)} of {len(values)}"


def render(c: Comparison) -> str:
    """The comparison as Markdown: the verdicts that differ, then a table of every FD."""
    lines = ["# Two runs compared", "", f"- A: {c.runs[0]}", f"- B: {c.runs[1]}", "",
             "## Verdict sentences of results.md, numbers masked", "",
             f"{c.n_same} of {c.n_clauses[0]} clauses of A read the same in B ({c.n_clauses[1]} in B); "
             f"differing and deciding (not indexed by measured seconds, not resting on one training seed): "
             f"{len(c.verdicts_differing)} block(s)."]
    for da, db in c.differing:
        why = c.undecided((da, db))
        lines += ["", f"In `{(da or db)[0].section}`{f' ({why})' if why else ''}:"]
        lines += [f"- A: {x.text}" for x in da] + [f"- B: {x.text}" for x in db]
        if len(da) == len(db) == 1:
            only_a, only_b = items_only_in(da[0].text, db[0].text)
            if only_a or only_b:
                lines += [f"- in A only: {', '.join(only_a) or '–'}; in B only: {', '.join(only_b) or '–'}"]
                lines += [f"  - {m}" for item in only_a + only_b if (m := margins(c, item))]
    rungs = [v for v in c.values if v.kind == "ladder"]
    fixed = [v for v in c.values if v.kind != "model" and not math.isnan(v.relative_gap)]
    lines += ["", "## FD in both runs (agree: the gap within twice the spread of the difference)", ""]
    if c.only_in:
        lines += [f"In one run only (a difference): {len(c.only_in)} row(s): "
                  + "; ".join(f"{space} {row} (only in {run})" for space, row, run in c.only_in) + ".", ""]
    if fixed:
        worst = max(fixed, key=lambda v: v.relative_gap)
        lines += [f"The ladder rungs and the real reference score the same images with the same shipped rulers "
                  f"in both runs: largest relative gap {worst.relative_gap:.2g} ({worst.space}, {worst.row}).", ""]
    lines += [f"Agreeing: ladder rungs {_tally(rungs)}; models pooling {MIN_SEEDS} or more training seeds "
              f"{_tally([v for v in c.values if (v.seeds or 0) >= MIN_SEEDS])}; models of fewer "
              f"{_tally([v for v in c.values if v.kind == 'model' and (v.seeds or 0) < MIN_SEEDS])}; "
              f"every row {_tally(c.values)}.", "",
              "A model's spread includes training seeds only where it pools several (the seeds column); with "
              "one, a rerun on another CPU can move it beyond that spread even in fp32 (other kernels round "
              "differently, and training amplifies it), which is why the reports settle nothing on one seed.", "",
              "| space | row | seeds | A | B | gap | 2 × spread | agree |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {v.space} | {v.row} | {v.seeds or ''} | {fmt(*v.a)} | {fmt(*v.b)} | {v.gap:+.3g} | "
              f"{2 * v.spread:.3g} | {'yes' if v.agrees else '**no**'} |" for v in c.values]
    lines += ["", "The runs agree." if c.agrees else "The runs differ (above)."]
    return "\n".join(lines) + "\n"
