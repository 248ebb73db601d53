"""``reports/index.json`` and ``index.md``: what each notebook last made, from what, and when.

The JSON keeps one entry per notebook, so a run of some notebooks keeps the others' entries; the
Markdown is rendered from it, with links to every figure and table in each notebook's folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrnb.errors import CxrnbError
from cxrnb.paths import write_text
from cxrnb.profiles import RUNNER_PARAMS

TABLE_SUFFIXES = (".csv", ".md", ".tex")


@dataclass
class NotebookRun:
    """What happened to one notebook: an entry of reports/index.json."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    parameters: dict = field(default_factory=dict)
    profile: str = ""
    data: str = ""                 # what the figures were made from (``describe_data``)
    commit: str = ""
    date: str = ""
    last_attempt: str = ""         # a later attempt that failed and left these figures in place
    machine: str = ""              # the CPU model or GPU it ran on (runtime.device_name)
    precision: str = ""            # the arithmetic its models trained in (runtime.describe_precision)
    versions: dict = field(default_factory=dict)   # torch, torchvision, diffusers, numpy


def read_index(reports: Path) -> dict[str, NotebookRun]:
    """The entries of ``reports/index.json`` by notebook (empty when there is none yet)."""
    path = reports / "index.json"
    if not path.is_file():
        return {}
    try:
        return {e["name"]: NotebookRun(**e) for e in json.loads(path.read_text())["notebooks"]}
    except (ValueError, KeyError, TypeError):
        raise CxrnbError(f"{path} is not an index written by cxrnb: move it away, or use another --reports") from None


def _words(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _summary(runs: list[NotebookRun]) -> list[str]:
    """The heading and one table row per notebook: status, time, profile, data, commit, copy."""
    shared = {(r.profile, r.data, r.commit) for r in runs if r.status != "not run"}
    lines = ["# Reports", ""]
    if len(shared) == 1:
        profile, data, commit = shared.pop()
        lines += [f"Profile `{profile}` · data: {data} · cxrnb {commit}", ""]
    for machine, precision, versions in sorted({(r.machine, r.precision, _words(r.versions)) for r in runs
                                                if r.status != "not run" and r.machine}):
        lines += [f"Machine: {machine} · training precision: {precision} · {versions}", ""]
    lines += ["| notebook | status | time | profile · data · commit · date "
              "| executed copy (local: reports/runs/ is not committed) |", "|---|---|---|---|---|"]
    for r in runs:
        ran = r.status != "not run"
        status = r.status + (f" (last attempt {r.last_attempt}; figures below are from this run)"
                             if r.last_attempt else "")
        time_, copy = (_duration(r.seconds), f"[runs/{r.name}.ipynb](runs/{r.name}.ipynb)") if ran else ("", "")
        lines.append(f"| {r.name} | {status} | {time_} | `{r.profile}` · {r.data} · {r.commit} · {r.date} | {copy} |")
    return lines


def _section(reports: Path, r: NotebookRun) -> list[str]:
    """One notebook's parameters and links to the figures and tables now in its folder."""
    folder = reports / "figures" / r.name
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if r.status == "not run" and not files:
        return []
    shown = [f"`{k}={v!r}`" for k, v in r.parameters.items() if k not in RUNNER_PARAMS]
    lines = ["", f"## {r.name}", "", "Parameters: " + (", ".join(shown) or "defaults")]
    for title, suffixes in (("Figures", (".png",)), ("Tables", TABLE_SUFFIXES)):
        links = [f"- [{p.relative_to(folder).as_posix()}]({p.relative_to(reports).as_posix()})"
                 for p in files if p.suffix in suffixes]
        if links:
            lines += ["", f"{title}:", "", *links]
    return lines


def write_index(reports: Path, entries: dict[str, NotebookRun]) -> Path:
    """``reports/index.json`` and ``index.md``: per notebook its status, run time, profile, data,
    commit, parameters, and the figures and tables now in its folder."""
    runs = [entries[k] for k in sorted(entries)]
    reports.mkdir(parents=True, exist_ok=True)
    write_text(reports / "index.json", json.dumps({"notebooks": [asdict(r) for r in runs]}, indent=1) + "\n")
    lines = _summary(runs)
    for r in runs:
        lines += _section(reports, r)
    return write_text(reports / "index.md", "\n".join(lines) + "\n")
