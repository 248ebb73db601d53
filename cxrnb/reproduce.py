"""`cxrnb reproduce`: run the numbered notebooks headless with papermill and index what they made.

Each ``notebooks/NN_name.ipynb`` (committed without outputs) runs in name order. Its parameters
come from four layers, later ones winning: the profile, the profile's section for that notebook, a
YAML file, then ``--set key=value``. Only the parameters a notebook declares in its ``parameters``
cell are passed. A layer's keys that start with a digit are per-notebook sections, matched by
prefix: ``{"epochs": 3, "02": {"epochs": 1}}`` gives notebook 02 one epoch and the others three
(on the command line: ``--set 02.epochs=1``).

The runner adds ``reports_dir`` (and ``results_md``), where the notebook writes its figures and
tables, and runs the kernel in the directory ``reproduce`` is called from (the repository root under
``make``); every path it passes is absolute, so the notebooks do not depend on it.

Nothing is lost on failure: each notebook writes into ``reports/.staging/<notebook>/``, and only when
it succeeds does that folder replace ``reports/figures/<notebook>/``. A failing or interrupted
notebook leaves the previous figures and their index entry in place, and the index says the last
attempt failed. ``reports/index.json`` keeps one entry per notebook (status, time, parameters,
profile, data, commit), so a run of some notebooks keeps the others' entries; ``index.md`` is
rendered from it. Reports made from one data set are not overwritten by a run on another (e.g.
the phantom over the committed real-data reports) unless ``overwrite=True`` (``--overwrite``).
Executed copies go to ``reports/runs/`` (local, not committed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import papermill as pm
import yaml
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm

from cxrnb.data.index import data_source, locate_images
from cxrnb.errors import CxrnbError
from cxrnb.paths import write_text
from cxrnb.provenance import git_commit

KERNEL = "python3"

# Literal parameter sets. A string "$NAME" is read from the environment when the run starts.
PROFILES: dict[str, dict] = {
    # Seconds per notebook, on the synthetic phantom: does every notebook run end to end?
    "smoke": {"data_root": "phantom", "image_size": 64, "epochs": 1, "max_images": 64,
              "batch_size": 16, "seed": 0, "device": "cpu", "smoke": True, "runs_dir": "runs/smoke",
              "02": {"sample_at": [0, 2]}, "04": {"sample_at": [0, 2], "train_conditional": True},
              "06": {"sample_at": [0, 2], "channels": [16, 32, 32], "sample_steps": 4, "n_grid": 16,
                     "n_timed": 4},
              "03": {"presets": ["FS-GMVAE-V1", "FS-GMVAE-V3", "GMVAE-V6", "GMVAE-V8", "GMVAE-elbo",
                                 "FS-GMVAE-elbo"], "epochs_for": {"GMVAE-V8": 2}},
              "07": {"n_generated": 40, "n_repeats": 2, "classifier_epochs": 1,
                     "usefulness_seeds": [0], "conditional_model": "LSGAN-cond"}},
    # Minutes per notebook on a CPU (2 cores: ~35 min in all), real images at 64 px. The paper's
    # VAE and GMVAE presets collapse within a few dozen iterations (notebooks 02, 03 show it), so
    # the time goes to the models that learn, the LSGAN, and one equal-length pair that isolates
    # the loss (VAE-beta0.002 and VAE-elbo-beta1, 200 iterations each), and the Dirichlet-prior VAE
    # for as many iterations as VAE-elbo-beta1 (its steps cost ~2/3 of the Gaussian VAE's: ~1-2 min).
    "cpu": {"data_root": "$CXR14_ROOT", "image_size": 64, "epochs": 2, "max_images": None,
            "batch_size": 64, "seed": 0, "device": "cpu", "smoke": False, "runs_dir": "runs/cpu",
            "02": {"epochs": 1, "epochs_for": {"VAE-beta0.002": 10, "VAE-elbo-beta1": 10, "DirVAE-elbo": 10},
                   "sample_at": [0, 20, 100]},
            "03": {"epochs": 0.5, "epochs_for": {"GMVAE-elbo": 12.5, "FS-GMVAE-elbo": 12.5}},
            # LSGAN-cond (ours, for 07's augmentation test) trains as long as the LSGAN, 12.5 epochs:
            # its iterations cost about the same, so notebook 04 takes about twice as long (~5 more minutes).
            "04": {"epochs": 12.5, "sample_at": [0, 100], "train_conditional": True},
            # The DDPM at CPU size: the preset's U-Net at half width (1.1 M parameters), 50 DDIM steps.
            # On 2 idle cores an iteration takes ~1.3 s and a sample ~0.3-0.5 s, so ~4.5 minutes buy
            # 160 iterations (8 epochs), three 16-image grids and 16 timed samples: a DDPM barely started.
            # At the usual lr 2e-4 its samples were still flat grey after 160 iterations; at 1e-3 they
            # show two lung fields and vary (measured on the real subset, seed 0).
            "06": {"epochs": 8, "channels": [16, 32, 64, 64], "sample_at": [0, 40], "n_grid": 16,
                   "n_timed": 16, "lr": 1e-3},
            "07": {"n_generated": 200, "n_repeats": 5, "classifier_epochs": 10,
                   "usefulness_seeds": [0, 1, 2], "conditional_model": "LSGAN-cond"}},
    # The paper's settings (SPEC.md), for a GPU: VAE and LSGAN at 128 px, GMVAE at 224 px, batch 64.
    "paper": {"data_root": "$CXR14_ROOT", "image_size": 128, "epochs": 5, "max_images": None,
              "batch_size": 64, "seed": 0, "device": "auto", "smoke": False, "runs_dir": "runs/paper",
              "02": {"epochs": 2}, "03": {"image_size": 224, "epochs": 1}, "04": {"train_conditional": True},
              "06": {"epochs": 20},      # ~35k iterations of the 4.3 M-parameter U-Net on full CXR14
              "07": {"image_size": 128, "conditional_model": "LSGAN-cond"}},
}
RUNNER_PARAMS = ("reports_dir", "results_md")   # set by the runner for each notebook, never by the user
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


def find_notebooks(folder: str | Path) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in name order."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise CxrnbError(f"no notebooks named NN_name.ipynb in {folder}: run from the repository root "
                         "or pass notebooks=")
    return found


def _is_section(key: str) -> bool:
    return key[:1].isdigit()          # parameter names are identifiers, which never start with one


def _for_notebook(layer: dict, name: str) -> dict:
    """One layer's values for one notebook: its common keys, then its matching sections'."""
    out = {k: v for k, v in layer.items() if not _is_section(k)}
    for key in sorted(k for k in layer if _is_section(k) and name.startswith(k)):
        out.update(layer[key])
    return out


def read_overrides(params_file: str | Path | None, overrides: tuple[str, ...] | list[str]) -> list[dict]:
    """The YAML file's mapping and the ``--set key=value`` pairs (values parsed as YAML)."""
    layers = []
    if params_file:
        path = Path(params_file)
        if not path.is_file():
            raise CxrnbError(f"parameters file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CxrnbError(f"parameters file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise CxrnbError(f"parameters file {path} must be a mapping of name: value "
                             "(and notebook prefix: {name: value})")
        # YAML reads an unquoted 02 as the integer 2: give prefixes back their two digits.
        layer = {f"{k:02d}" if isinstance(k, int) else str(k): v for k, v in data.items()}
        if not all(isinstance(v, dict) for k, v in layer.items() if _is_section(k)):
            raise CxrnbError(f"parameters file {path}: a notebook prefix must hold a mapping, "
                             "e.g. '02': {epochs: 1}")
        layers.append(layer)
    cli: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CxrnbError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=2")
        section, _, name = key.strip().rpartition(".")
        target = cli.setdefault(section, {}) if section else cli
        target[name] = yaml.safe_load(value)
    return layers + [cli]


def _check_keys(layers: list[dict], notebooks: list[Path], declared: dict[str, dict]) -> None:
    """Every override names a parameter some notebook declares, in a section some notebook has."""
    valid = set().union(*declared.values()) - set(RUNNER_PARAMS)
    for layer in layers:
        for key, value in layer.items():
            if _is_section(key):
                if not any(nb.stem.startswith(key) for nb in notebooks):
                    raise CxrnbError(f"no notebook starts with {key!r}; notebooks: "
                                     f"{', '.join(nb.stem for nb in notebooks)}")
                names = value
            else:
                names = [key]
            for name in names:
                if name in RUNNER_PARAMS:
                    raise CxrnbError(f"{name} is set by the runner for each notebook: choose the "
                                     "folder with --reports instead")
                if name not in valid:
                    raise CxrnbError(f"no notebook declares a parameter {name!r}; valid names: "
                                     f"{', '.join(sorted(valid))}")


def _type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict",
            type(None): "None"}.get(type(value), type(value).__name__)


def _check_types(layers: list[dict], notebooks: list[Path], defaults: dict[str, dict]) -> None:
    """Every override has the type of the notebook's default (int for a float, and any value for a
    None default, allowed), so `--set epochs=two` fails here, not minutes later inside a kernel."""
    for layer in layers:
        items = [(k, v, [nb.stem for nb in notebooks]) for k, v in layer.items() if not _is_section(k)]
        items += [(k, v, [nb.stem for nb in notebooks if nb.stem.startswith(section)])
                  for section, values in layer.items() if _is_section(section) for k, v in values.items()]
        for key, value, names in items:
            for name in names:
                if key not in defaults[name]:
                    continue
                default = defaults[name][key]
                ok = (default is None or value is None or type(value) is type(default)
                      or (isinstance(default, float) and type(value) is int))
                if not ok:
                    raise CxrnbError(f"{key}={value!r} is {_type_name(value)}, but notebook {name} expects "
                                     f"{_type_name(default)} (its default is {default!r})")


def _defaults(nb: Path) -> dict:
    """The literal values of a notebook's parameters cell (the notebooks-clean test keeps it literal)."""
    import ast

    import nbformat

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


def _resolve(params: dict, profile: str) -> dict:
    """Read "$NAME" values from the environment; make data_root absolute and check it exists.

    Only a notebook's declared parameters are resolved, so a notebook that does not read the
    images runs without CXR14_ROOT."""
    out = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("$"):
            if not os.environ.get(value[1:]):
                raise CxrnbError(f"{key} is read from {value} (profile {profile!r}), which is unset: export "
                                 f"{value[1:]}=/path/to/cxr14, or --set {key}=..., or use --profile smoke")
            out[key] = os.environ[value[1:]]
    root = out.get("data_root")
    if root not in (None, "phantom"):
        if not Path(root).is_dir():
            raise CxrnbError(f"data_root {root} is not a folder: point it at a CXR14 folder "
                             "(Data_Entry_2017.csv + images/) or use 'phantom'")
        out["data_root"] = str(Path(root).resolve())
    return out


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise CxrnbError(f"no Jupyter kernel named {KERNEL!r}: run `python -m ipykernel install "
                         f"--sys-prefix --name {KERNEL}` (make install does)") from None


def _failure(name: str, e: PapermillExecutionError, executed: Path) -> str:
    first_line = next((line for line in e.source.splitlines() if line.strip()), "").strip()
    evalue = (e.evalue.strip().splitlines() or [""])[0][:200]
    return (f"notebook {name} failed in cell [{e.exec_count}] `{first_line[:80]}`: "
            f"{e.ename}: {evalue} (traceback in {executed})")


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


def _execute(nb: Path, run: NotebookRun, reports: Path, progress: bool) -> None:
    """Run one notebook into its staging folder and, when it succeeds, publish what it made."""
    stage, executed = _stage(reports, nb.stem), reports / "runs" / nb.name
    params = {**run.parameters, "reports_dir": str(stage / "figures")}
    if "results_md" in run.parameters:
        params["results_md"] = str(stage / "results.md")
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name=KERNEL,
                            progress_bar=progress, cwd=str(Path.cwd()))
    except BaseException as e:                    # a failing cell, Ctrl-C, a dead kernel: old figures stay
        run.seconds = time.perf_counter() - start
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, PapermillExecutionError):
            run.status = f"failed: {e.ename} in cell [{e.exec_count}]"
            raise CxrnbError(_failure(nb.stem, e, executed)) from None
        run.status = f"failed: {type(e).__name__}"
        raise
    run.seconds = time.perf_counter() - start
    _publish(stage, reports, nb.stem)
    run.status = "ok"


def reproduce(profile: str = "cpu", params_file: str | Path | None = None,
              overrides: tuple[str, ...] | list[str] = (), only: tuple[str, ...] | list[str] = (),
              reports: str | Path = "reports", notebooks: str | Path = "notebooks",
              progress: bool = True, overwrite: bool = False) -> Path:
    """Run the notebooks (those whose name starts with one of ``only``, or all) and write
    ``reports/index.md``. Every parameter is checked before the first kernel starts. The first
    failing notebook stops the run with a one-line error; its executed copy keeps the traceback,
    and its previous figures stay (module docstring). ``overwrite`` lets reports made from other
    data be replaced."""
    if profile not in PROFILES:
        raise CxrnbError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    all_notebooks = find_notebooks(notebooks)
    selected = [nb for nb in all_notebooks if not only or any(nb.stem.startswith(p) for p in only)]
    if not selected:
        raise CxrnbError(f"no notebook starts with {', '.join(only)}; notebooks: "
                         f"{', '.join(nb.stem for nb in all_notebooks)}")
    defaults = {nb.stem: _defaults(nb) for nb in all_notebooks}
    declared = {name: set(d) for name, d in defaults.items()}
    layers = read_overrides(params_file, overrides)
    _check_keys(layers, all_notebooks, declared)
    _check_types(layers, all_notebooks, defaults)
    _check_kernel()

    reports = Path(reports).resolve()
    entries = read_index(reports)
    runs, data_of = [], {}                      # every notebook's parameters before running any
    for nb in selected:
        merged = {}
        for layer in [PROFILES[profile], *layers]:
            merged.update(_for_notebook(layer, nb.stem))
        merged["results_md"] = str(reports / "results.md")     # (both staged by _execute)
        merged["reports_dir"] = str(reports / "figures" / nb.stem)
        params = _resolve({k: v for k, v in merged.items() if k in declared[nb.stem]}, profile)
        root = params.get("data_root")
        if root not in data_of:
            data_of[root] = describe_data(root)
        runs.append(NotebookRun(nb.stem, parameters=params, profile=profile, data=data_of[root]))
    for run in runs:
        before = entries.get(run.name)
        if not overwrite and before and before.status == "ok" and before.data != run.data:
            raise CxrnbError(f"{reports} holds {run.name}'s figures made from {before.data}; this run reads "
                             f"{run.data}: write elsewhere with --reports DIR, or replace them with --overwrite")
    (reports / "runs").mkdir(parents=True, exist_ok=True)
    try:
        with tqdm(total=len(selected), desc="notebooks", disable=not progress) as bar:
            for nb, run in zip(selected, runs):
                bar.set_postfix_str(nb.stem)
                run.status, run.commit, run.date = "running", git_commit(), f"{datetime.now():%Y-%m-%d %H:%M}"
                try:
                    _execute(nb, run, reports, progress)
                except BaseException:
                    old = entries.get(run.name)
                    if old and old.status == "ok":         # its figures are still the old run's
                        old.last_attempt = f"{run.status} on {run.date} (cxrnb {run.commit})"
                    else:
                        entries[run.name] = run
                    raise
                entries[run.name] = run
                bar.update()
    finally:
        for run in runs:                          # selected, never reached, never run before
            entries.setdefault(run.name, run)
        write_index(reports, entries)
    return reports / "index.md"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def read_index(reports: Path) -> dict[str, NotebookRun]:
    """The entries of ``reports/index.json`` by notebook (empty when there is none yet)."""
    path = reports / "index.json"
    if not path.is_file():
        return {}
    try:
        return {e["name"]: NotebookRun(**e) for e in json.loads(path.read_text())["notebooks"]}
    except (ValueError, KeyError, TypeError):
        raise CxrnbError(f"{path} is not an index written by cxrnb: move it away, or use another --reports") from None


def write_index(reports: Path, entries: dict[str, NotebookRun]) -> Path:
    """``reports/index.json`` and ``index.md``: per notebook its status, run time, profile, data,
    commit, parameters, and the figures and tables now in its folder."""
    runs = [entries[k] for k in sorted(entries)]
    reports.mkdir(parents=True, exist_ok=True)
    write_text(reports / "index.json", json.dumps({"notebooks": [asdict(r) for r in runs]}, indent=1) + "\n")
    shared = {(r.profile, r.data, r.commit) for r in runs if r.status != "not run"}
    lines = ["# Reports", ""]
    if len(shared) == 1:
        profile, data, commit = shared.pop()
        lines += [f"Profile `{profile}` · data: {data} · cxrnb {commit}", ""]
    lines += ["| notebook | status | time | profile · data · commit · date | executed copy (local: reports/runs/ is not committed) |",
              "|---|---|---|---|---|"]
    for r in runs:
        ran = r.status != "not run"
        status = r.status + (f" (last attempt {r.last_attempt}; figures below are from this run)"
                             if r.last_attempt else "")
        time_, copy = (_duration(r.seconds), f"[runs/{r.name}.ipynb](runs/{r.name}.ipynb)") if ran else ("", "")
        lines.append(f"| {r.name} | {status} | {time_} | `{r.profile}` · {r.data} · {r.commit} · {r.date} | {copy} |")
    for r in runs:
        folder = reports / "figures" / r.name
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        if r.status == "not run" and not files:
            continue
        shown = [f"`{k}={v!r}`" for k, v in r.parameters.items() if k not in RUNNER_PARAMS]
        lines += ["", f"## {r.name}", "", "Parameters: " + (", ".join(shown) or "defaults")]
        for title, keep in (("Figures", lambda p: p.suffix == ".png"),
                            ("Tables", lambda p: p.suffix in TABLE_SUFFIXES)):
            links = [f"- [{p.relative_to(folder).as_posix()}]({p.relative_to(reports).as_posix()})"
                     for p in files if keep(p)]
            if links:
                lines += ["", f"{title}:", "", *links]
    index = reports / "index.md"
    tmp = reports / ".index.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, index)
    return index
