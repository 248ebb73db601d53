"""`cxrnb reproduce`: run the numbered notebooks headless with papermill and index what they made.

Each ``notebooks/NN_name.ipynb`` (committed without outputs) runs in name order, with the
parameters of a profile and the user's overrides layered as ``cxrnb.profiles`` describes. Only the
parameters a notebook declares in its ``parameters`` cell are passed.

The runner adds ``reports_dir`` (and ``results_md``), where the notebook writes its figures and
tables, and runs the kernel in the directory ``reproduce`` is called from (the repository root under
``make``); every path it passes is absolute, so the notebooks do not depend on it.

Nothing is lost on failure: each notebook writes into ``reports/.staging/<notebook>/``, and only when
it succeeds does that folder replace ``reports/figures/<notebook>/``. A failing or interrupted
notebook leaves the previous figures and their index entry in place, and the index says the last
attempt failed. ``reports/index.json`` keeps one entry per notebook (``cxrnb.report.index``).
One ``reproduce`` at a time writes into a reports folder (``index.one_writer``); at start-up it
puts back what a run killed outright left in ``.staging``.

SIGTERM (a batch scheduler's time limit), SIGINT and SIGHUP are passed on to the running notebook's
kernel as an interrupt (``Signals``): a training loop checkpoints and stops, the notebook is indexed
as interrupted, its staging is removed, and the same command resumes from the checkpoint.
Reports made from one data set are not overwritten by a run on another (e.g. the phantom over the
committed real-data reports) unless ``overwrite=True`` (``--overwrite``). Executed copies go to
``reports/runs/`` (local, not committed).
"""

from __future__ import annotations

import ast
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import nbformat
import papermill as pm
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm

from cxrnb.data.index import data_source, locate_images
from cxrnb.errors import CxrnbError
from cxrnb.kernel_signals import Interrupted, Signals, in_thread
from cxrnb.paths import NOTEBOOKS_DIR, in_repo
from cxrnb.profiles import check_keys, check_profile, check_types, layered, read_overrides, resolve
from cxrnb.provenance import git_commit
from cxrnb.report.index import NotebookRun, one_writer, read_index, write_index
from cxrnb.runtime import (
    channels_last_default,
    describe_precision,
    device_name,
    library_versions,
    pick_device,
    resolve_precision,
)

KERNEL = "python3"


def find_notebooks(folder: str | Path) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in name order."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise CxrnbError(f"no notebooks named NN_name.ipynb in {folder}: pass the folder that holds "
                         "them with --notebooks DIR (notebooks= in Python)")
    return found


def _defaults(nb: Path) -> dict:
    """The literal values of a notebook's parameters cell (the notebooks-clean test keeps it literal)."""
    cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in ast.parse(cell.source).body
            if isinstance(stmt, ast.Assign)}


def describe_data(root: str | None) -> str:
    """What a notebook's figures are made from: the kind of data and its image count (no paths, so
    the same data set in another folder or on another machine compares equal)."""
    if root is None:
        return "no images"
    if root == "phantom":
        return "synthetic phantom"
    return f"{data_source(root)}, {len(locate_images(root)):,} images"


def _check_kernel() -> None:
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise CxrnbError(f"no Jupyter kernel named {KERNEL!r}: run `python -m ipykernel install "
                         f"--sys-prefix --name {KERNEL}` (make install does)") from None


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "").strip()


def _failure(name: str, e: PapermillExecutionError, executed: Path) -> str:
    evalue = _first_line(e.evalue)
    if e.ename != "CxrnbError":                  # ours are one line written to be read whole
        evalue = evalue[:200]
    return (f"notebook {name} failed in cell [{e.exec_count}] `{_first_line(e.source)[:80]}`: "
            f"{e.ename}: {evalue} (traceback in {executed})")


def _interruption(name: str, signals: Signals, e: BaseException, executed: Path) -> str:
    """The one line of a run a signal stopped: which, where, and that the same command goes on."""
    if isinstance(e, Interrupted):
        return f"{e} (notebook {name})"
    if isinstance(e, PapermillExecutionError):
        said = _first_line(e.evalue) if e.ename == "KeyboardInterrupt" else f"{e.ename}: {_first_line(e.evalue)}"
        return (f"{signals.name}: passed to notebook {name} as an interrupt; it stopped in cell [{e.exec_count}] "
                f"`{_first_line(e.source)[:60]}`" + (f": {said}" if said else "; run the same command again")
                + f" (executed copy in {executed})")
    return f"{signals.name}: notebook {name} stopped ({type(e).__name__}); run the same command again"


def _stage(reports: Path, name: str) -> Path:
    stage = reports / ".staging" / name
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "figures").mkdir(parents=True)
    return stage


def _publish(stage: Path, reports: Path, name: str) -> None:
    """Put a succeeded notebook's staged outputs in place of the previous ones."""
    final, old = reports / "figures" / name, reports / ".staging" / f"{name}.old"
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(stage / "figures", final)
    if (stage / "results.md").exists():
        os.replace(stage / "results.md", reports / "results.md")
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def _recover(reports: Path) -> None:
    """Undo what a run killed outright (SIGKILL, a power cut) left in ``.staging``: a notebook's
    previous figures, moved aside by ``_publish``, go back in place; half-made outputs go."""
    for folder in sorted(p for p in (reports / ".staging").glob("*") if p.is_dir()):
        final = reports / "figures" / folder.name.removesuffix(".old")
        if folder.name.endswith(".old") and not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder, final)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _execute(nb: Path, run: NotebookRun, reports: Path, progress: bool, signals: Signals) -> None:
    """Run one notebook into its staging folder and, when it succeeds, publish what it made."""
    stage, executed = _stage(reports, nb.stem), reports / "runs" / nb.name
    params = {**run.parameters, "reports_dir": str(stage / "figures")}
    if "results_md" in run.parameters:
        params["results_md"] = str(stage / "results.md")
    start = time.perf_counter()
    try:
        in_thread(lambda: pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name=KERNEL,
                                               progress_bar=progress, cwd=str(Path.cwd()),
                                               **signals.client_options()), signals)
    except BaseException as e:                    # a failing cell, a signal, a dead kernel: old figures stay
        run.seconds = time.perf_counter() - start
        shutil.rmtree(stage, ignore_errors=True)
        if signals.signum is not None:
            run.status = f"interrupted by {signals.name}"
            raise Interrupted(_interruption(nb.stem, signals, e, executed)) from None
        if isinstance(e, PapermillExecutionError):
            run.status = f"failed: {e.ename} in cell [{e.exec_count}]"
            raise CxrnbError(_failure(nb.stem, e, executed)) from None
        run.status = f"failed: {type(e).__name__}"
        raise
    run.seconds = time.perf_counter() - start
    _publish(stage, reports, nb.stem)
    run.status = "ok"


def _select(notebooks: list[Path], only: tuple[str, ...] | list[str]) -> list[Path]:
    """The notebooks whose name starts with one of ``only`` (all of them when it is empty)."""
    selected = [nb for nb in notebooks if not only or any(nb.stem.startswith(p) for p in only)]
    if not selected:
        raise CxrnbError(f"no notebook starts with {', '.join(only)}; notebooks: "
                         f"{', '.join(nb.stem for nb in notebooks)}")
    return selected


def _plan(selected: list[Path], profile: str, layers: list[dict], defaults: dict[str, dict],
          reports: Path) -> list[NotebookRun]:
    """Every selected notebook's resolved parameters and data, before any of them runs."""
    runs, data_of = [], {}
    for nb in selected:
        merged = layered(profile, layers, nb.stem)
        merged["results_md"] = str(reports / "results.md")     # (both staged by _execute)
        merged["reports_dir"] = str(reports / "figures" / nb.stem)
        declared = {k: v for k, v in merged.items() if k in defaults[nb.stem]}
        if "data_root" in declared and not str(declared["data_root"] or "").strip():
            raise CxrnbError(f"data_root is empty for notebook {nb.stem} (\"\" would be the working "
                             "directory): set it to a CXR14 folder or 'phantom', e.g. --set data_root=phantom")
        params = resolve(declared, profile)
        root = params.get("data_root")
        if root not in data_of:
            data_of[root] = describe_data(root)
        device = params.get("device", "auto")
        precision = resolve_precision("auto", pick_device(device))      # what TrainConfig does there
        runs.append(NotebookRun(nb.stem, parameters=params, profile=profile, data=data_of[root],
                                machine=device_name(device), versions=library_versions(),
                                precision=describe_precision(precision, channels_last_default(precision))))
    return runs


def _check_same_data(runs: list[NotebookRun], entries: dict[str, NotebookRun], reports: Path,
                     overwrite: bool) -> None:
    """Refuse to replace figures made from other data, unless told to."""
    for run in runs:
        before = entries.get(run.name)
        if not overwrite and before and before.status == "ok" and before.data != run.data:
            raise CxrnbError(f"{reports} holds {run.name}'s figures made from {before.data}; this run reads "
                             f"{run.data}: write elsewhere with --reports DIR, or replace them with --overwrite")


def _run_all(selected: list[Path], runs: list[NotebookRun], entries: dict[str, NotebookRun], reports: Path,
             progress: bool, signals: Signals) -> None:
    """Run the notebooks in order, each entry updated as it finishes; the first failure stops the run,
    and so does a signal (``Signals``)."""
    with tqdm(total=len(selected), desc="notebooks", disable=not progress) as bar:
        for nb, run in zip(selected, runs):
            if signals.signum is not None:
                raise Interrupted(f"{signals.name}: stopped before notebook {nb.stem}; run the same command "
                                  "again to go on")
            bar.set_postfix_str(nb.stem)
            run.status, run.commit, run.date = "running", git_commit(), f"{datetime.now():%Y-%m-%d %H:%M}"
            try:
                _execute(nb, run, reports, progress, signals)
            except BaseException:
                old = entries.get(run.name)
                if old and old.status == "ok":         # its figures are still the old run's
                    old.last_attempt = f"{run.status} on {run.date} (cxrnb {run.commit})"
                else:
                    entries[run.name] = run
                raise
            entries[run.name] = run
            bar.update()


def reproduce(profile: str = "cpu", params_file: str | Path | None = None,
              overrides: tuple[str, ...] | list[str] = (), only: tuple[str, ...] | list[str] = (),
              reports: str | Path = "reports", notebooks: str | Path | None = None,
              progress: bool = True, overwrite: bool = False) -> Path:
    """Run the notebooks in ``notebooks`` (default: the checkout's, from any working directory)
    whose name starts with one of ``only``, or all, and write ``reports/index.md``. Every parameter
    is checked before the first kernel starts. The first failing notebook stops the run with a
    one-line error; its executed copy keeps the traceback, and its previous figures stay (module
    docstring); a signal stops it with ``Interrupted``. ``overwrite`` lets reports made from other
    data be replaced; a second run into the same ``reports`` is refused."""
    check_profile(profile)
    all_notebooks = find_notebooks(in_repo(NOTEBOOKS_DIR) if notebooks is None else notebooks)
    selected = _select(all_notebooks, only)
    defaults = {nb.stem: _defaults(nb) for nb in all_notebooks}
    layers = read_overrides(params_file, overrides)
    check_keys(layers, list(defaults), {name: set(d) for name, d in defaults.items()})
    check_types(layers, list(defaults), defaults)
    _check_kernel()

    reports = Path(reports).resolve()
    read_index(reports)                           # not ours: refused before any work
    runs = _plan(selected, profile, layers, defaults, reports)
    with one_writer(reports), Signals() as signals:
        _recover(reports)
        entries = read_index(reports)             # as the last writer left it
        _check_same_data(runs, entries, reports, overwrite)
        (reports / "runs").mkdir(parents=True, exist_ok=True)
        try:
            _run_all(selected, runs, entries, reports, progress, signals)
        finally:
            for run in runs:                      # selected, never reached, never run before
                entries.setdefault(run.name, run)
            write_index(reports, entries)
    return reports / "index.md"
