"""``reports/index.json`` and ``index.md``: what each notebook last made, from what, and when.

The JSON keeps one entry per notebook, so a run of some notebooks keeps the others' entries; the
Markdown is rendered from it, with links to every figure and table in each notebook's folder.
One reports folder has one writer at a time (``one_writer``).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrnb.errors import CxrnbError
from cxrnb.paths import write_text
from cxrnb.profiles import RUNNER_PARAMS

TABLE_SUFFIXES = (".csv", ".md", ".tex")
LOCK = Path(".staging") / "lock"      # inside the reports folder; holds the writer's pid


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


def _holder(lock: Path) -> str:
    """The pid in a held lock file (its holder writes it just after taking the lock)."""
    for _ in range(20):
        try:
            pid = lock.read_text().strip()
        except OSError:
            pid = ""
        if pid:
            return pid
        time.sleep(0.05)
    return "?"


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def one_writer(reports: Path) -> Iterator[None]:
    """Hold ``reports``' lock while a run writes into it, or refuse at once: two runs publishing
    the same notebook would strand each other's figures and leave an index describing neither.

    An ``flock`` on ``reports/.staging/lock``: the system drops it when the process ends, however it
    ends, so a killed run never leaves the folder locked. The file is removed on release, and a lock
    taken on a file already removed is taken again on the new one."""
    lock = reports / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise CxrnbError(f"another reproduce (pid {_holder(lock)}) is writing to {reports}: wait for "
                             "it to end, or write elsewhere with --reports DIR") from None
        if _same_file(lock, f.fileno()):
            break
        f.close()                                   # its holder removed it as we opened it: again
    try:
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)
        f.close()
