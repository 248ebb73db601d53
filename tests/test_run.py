"""The papermill runner on tiny notebooks written here: parameter layers, the index, failures."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from cxrnb import profiles, reproduce
from cxrnb.errors import CxrnbError


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# Writes its effective parameters, a 2x2 PNG and a table into reports_dir.
FIGURE_BODY = """\
import json, pathlib
from PIL import Image
out = pathlib.Path(reports_dir)
(out / "params.json").write_text(json.dumps({k: globals()[k] for k in NAMES}))
Image.new("L", (2, 2), 128).save(out / "fig.png")
(out / "counts.csv").write_text("label,count\\nHernia,227\\n")
"""


@pytest.fixture
def two_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_data.ipynb",
                   "data_root = 'x'\nimage_size = 0\nepochs = 0\nseed = 0\nreports_dir = ''",
                   "NAMES = ['data_root', 'image_size', 'epochs', 'seed']\n" + FIGURE_BODY)
    write_notebook(folder / "02_train.ipynb", "epochs = 0\nbetas = []\nseed = 0\nreports_dir = ''",
                   "NAMES = ['epochs', 'betas', 'seed']\n" + FIGURE_BODY)
    monkeypatch.setitem(profiles.PROFILES, "test", {"data_root": "phantom", "image_size": 32, "epochs": 1,
                                                    "seed": 5, "device": "cpu",
                                                    "02": {"betas": [1, 0.1], "epochs": 4}})
    return folder


@pytest.mark.slow
def test_parameter_layers_and_index(tmp_path, two_notebooks):
    reports = tmp_path / "reports"
    (reports / "figures" / "01_data").mkdir(parents=True)
    (reports / "figures" / "01_data" / "stale.png").write_bytes(b"from an earlier run")
    params = tmp_path / "params.yaml"
    params.write_text("epochs: 2\nseed: 6\n02:\n  epochs: 3\n")     # an unquoted 02 is read as int 2

    index = reproduce.reproduce("test", params_file=params, overrides=["seed=7", "02.betas=[0.002]"],
                                reports=reports, notebooks=two_notebooks, progress=False)

    def effective(name):
        return json.loads((reports / "figures" / name / "params.json").read_text())
    # profile < profile section < YAML < YAML section < --set; undeclared ones (device) are not passed.
    assert effective("01_data") == {"data_root": "phantom", "image_size": 32, "epochs": 2, "seed": 7}
    assert effective("02_train") == {"epochs": 3, "betas": [0.002], "seed": 7}
    injected = nbformat.read(reports / "runs" / "01_data.ipynb", 4).metadata.papermill.parameters
    assert set(injected) == {"data_root", "image_size", "epochs", "seed", "reports_dir"}

    text = index.read_text()
    assert re.search(r"\| 01_data \| ok \| \d+\.\d s \| `test` · synthetic phantom · .+ "
                     r"\| \[runs/01_data.ipynb\]", text)
    assert re.search(r"\| 02_train \| ok \| \d+\.\d s \| `test` · no images · .+ \| \[runs/02_train.ipynb\]", text)
    for name in ("01_data", "02_train"):
        for link in (f"figures/{name}/fig.png", f"figures/{name}/counts.csv", f"runs/{name}.ipynb"):
            assert f"({link})" in text and (reports / link).is_file()
    assert "stale.png" not in text and not (reports / "figures" / "01_data" / "stale.png").exists()


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_and_is_indexed(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_ok.ipynb", "reports_dir = ''", "x = 1")
    write_notebook(folder / "02_fail.ipynb", "reports_dir = ''",
                   "y = 2\nraise ValueError('bad beta')\n# never reached")
    write_notebook(folder / "03_never.ipynb", "reports_dir = ''", "z = 3")
    write_notebook(folder / "04_not_selected.ipynb", "reports_dir = ''", "z = 4")
    reports = tmp_path / "reports"
    # The cpu profile needs CXR14_ROOT only for notebooks that declare data_root: none here.
    monkeypatch.delenv("CXR14_ROOT", raising=False)
    with pytest.raises(CxrnbError) as err:
        reproduce.reproduce("cpu", only=["01", "02", "03"], reports=reports, notebooks=folder, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "02_fail" in message and "`y = 2`" in message and "ValueError: bad beta" in message
    text = (reports / "index.md").read_text()
    assert re.search(r"\| 01_ok \| ok \| \d+\.\d s \|", text)
    assert re.search(r"\| 02_fail \| failed: ValueError in cell \[\d+\] \| \d+\.\d s \|", text)
    assert "| 03_never | not run |" in text and "04_not_selected" not in text
    assert "no images" in text
    assert not (reports / "runs" / "03_never.ipynb").exists()
    assert not (reports / ".staging" / "02_fail").exists() and not (reports / "figures" / "02_fail").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "gpu"}, "unknown profile 'gpu'; profiles: smoke, cpu, study, paper"),
    ({"overrides": ["epoch=2"]}, "no notebook declares a parameter 'epoch'; valid names: betas, data_root"),
    ({"overrides": ["02.epoch=2"]}, "no notebook declares a parameter 'epoch'"),
    ({"overrides": ["09.epochs=2"]}, "no notebook starts with '09'"),
    ({"overrides": ["epochs"]}, "expected KEY=VALUE"),
    ({"overrides": ["reports_dir=/tmp"]}, "set by the runner"),
    ({"only": ["07"]}, "no notebook starts with 07; notebooks: 01_data, 02_train"),
    ({"params_file": "missing.yaml"}, "parameters file missing.yaml not found"),
    ({"profile": "cpu"}, r"data_root is read from \$CXR14_ROOT \(profile 'cpu'\), which is unset"),
    ({"overrides": ["data_root=/no/such/folder"]}, "data_root /no/such/folder is not a folder"),
    ({"overrides": ["epochs=two"]}, "epochs='two' is str, but notebook 01_data expects int"),
    ({"overrides": ["02.betas=0.1"]}, "betas=0.1 is float, but notebook 02_train expects list"),
])
def test_bad_input_fails_before_any_notebook_runs(tmp_path, two_notebooks, monkeypatch, kwargs, message):
    monkeypatch.delenv("CXR14_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    kwargs = {"profile": "test", **kwargs}
    with pytest.raises(CxrnbError, match=message):
        reproduce.reproduce(**kwargs, reports=tmp_path / "reports", notebooks=two_notebooks, progress=False)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("text, message", [("- epochs\n- 2\n", "must be a mapping"),
                                           ("'02': 5\n", "a notebook prefix must hold a mapping"),
                                           ("epochs: [1\n", "is not valid YAML")])
def test_bad_yaml_file(tmp_path, two_notebooks, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(CxrnbError, match=message):
        reproduce.reproduce("test", params_file=bad, notebooks=two_notebooks, progress=False)


def test_empty_notebook_folder(tmp_path):
    with pytest.raises(CxrnbError, match="no notebooks named NN_name.ipynb"):
        reproduce.reproduce("smoke", notebooks=tmp_path, progress=False)


@pytest.mark.slow
def test_a_failure_keeps_the_previous_figures_and_a_partial_run_keeps_the_other_entries(tmp_path, two_notebooks):
    reports = tmp_path / "reports"
    reproduce.reproduce("test", reports=reports, notebooks=two_notebooks, progress=False)
    before = (reports / "figures" / "02_train" / "params.json").read_text()
    good = nbformat.read(two_notebooks / "02_train.ipynb", 4)
    broken = nbformat.read(two_notebooks / "02_train.ipynb", 4)
    broken.cells[-1].source = "(pathlib := __import__('pathlib')).Path(reports_dir, 'half.png').write_text('x')\n" \
                              "raise RuntimeError('out of memory')"
    nbformat.write(broken, two_notebooks / "02_train.ipynb")
    with pytest.raises(CxrnbError, match="RuntimeError: out of memory"):
        reproduce.reproduce("test", only=["02"], overrides=["seed=9"], reports=reports, notebooks=two_notebooks,
                            progress=False)
    folder = reports / "figures" / "02_train"
    assert (folder / "params.json").read_text() == before and not (folder / "half.png").exists()
    text = (reports / "index.md").read_text()
    assert "| 01_data | ok |" in text                      # not run this time, still indexed
    assert re.search(r"\| 02_train \| ok \(last attempt failed: RuntimeError in cell \[\d+\] on .+; figures "
                     r"below are from this run\)", text)
    assert "(figures/01_data/fig.png)" in text and "(figures/02_train/fig.png)" in text
    nbformat.write(good, two_notebooks / "02_train.ipynb")
    reproduce.reproduce("test", only=["02"], overrides=["seed=9"], reports=reports, notebooks=two_notebooks,
                        progress=False)
    assert json.loads((folder / "params.json").read_text())["seed"] == 9
    assert "last attempt" not in (reports / "index.md").read_text()
    assert not (reports / ".staging").exists() or not any((reports / ".staging").iterdir())


@pytest.mark.slow
def test_reports_of_other_data_are_not_overwritten_without_the_flag(tmp_path, two_notebooks, real_root):
    reports = tmp_path / "reports"
    reproduce.reproduce("test", only=["01"], overrides=[f"data_root={real_root}"], reports=reports,
                        notebooks=two_notebooks, progress=False)
    made = (reports / "figures" / "01_data" / "params.json").read_text()
    with pytest.raises(CxrnbError, match=r"holds 01_data's figures made from real CXR14 subset, 1,657 images; "
                                         r"this run reads synthetic phantom: .* --overwrite"):
        reproduce.reproduce("test", only=["01"], reports=reports, notebooks=two_notebooks, progress=False)
    assert (reports / "figures" / "01_data" / "params.json").read_text() == made
    reproduce.reproduce("test", only=["01"], reports=reports, notebooks=two_notebooks, progress=False, overwrite=True)
    assert "synthetic phantom" in (reports / "index.md").read_text()


def test_the_real_notebooks_parameter_cells_parse_cleanly_for_papermill(caplog):
    """papermill drops a parameter whose line it cannot parse (an '=' in a comment did it) and only logs
    "Unable to parse line"; every declared name must come through."""
    import logging

    import papermill as pm

    for nb in reproduce.find_notebooks(Path(__file__).resolve().parents[1] / "notebooks"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            declared = pm.inspect_notebook(str(nb))
        assert "Unable to parse" not in caplog.text, nb.name
        assert set(declared) == set(reproduce._defaults(nb)), nb.name


@pytest.mark.slow
def test_results_md_is_staged_and_published_with_its_notebook(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "06_eval.ipynb", "reports_dir = ''\nresults_md = ''",
                   "import pathlib\npathlib.Path(results_md).write_text('# results')\n"
                   "assert '.staging' in results_md")
    monkeypatch.setitem(profiles.PROFILES, "test", {})
    reproduce.reproduce("test", reports=tmp_path / "reports", notebooks=folder, progress=False)
    assert (tmp_path / "reports" / "results.md").read_text() == "# results"


# ---------------------------------------------------------------- one writer, recovery, where notebooks are

def test_a_reports_folder_someone_writes_to_is_refused_at_once(tmp_path, two_notebooks):
    import fcntl
    import os

    reports = tmp_path / "reports"
    (reports / ".staging").mkdir(parents=True)
    with open(reports / ".staging" / "lock", "w") as held:       # another reproduce holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        with pytest.raises(CxrnbError, match=f"another reproduce \\(pid 4242\\) is writing to {reports}: wait"):
            reproduce.reproduce("test", reports=reports, notebooks=two_notebooks, progress=False)
    assert not (reports / "index.md").exists() and not (reports / "runs").exists()
    assert os.listdir(reports / ".staging") == ["lock"]          # the holder's file is left alone


@pytest.mark.slow
def test_figures_stranded_by_a_killed_run_are_put_back(tmp_path, two_notebooks):
    reports = tmp_path / "reports"
    reproduce.reproduce("test", reports=reports, notebooks=two_notebooks, progress=False)
    # What a run killed in _publish leaves: the old figures moved aside, a half-made stage.
    (reports / ".staging").mkdir(exist_ok=True)
    (reports / "figures" / "01_data").rename(reports / ".staging" / "01_data.old")
    (reports / ".staging" / "02_train" / "figures").mkdir(parents=True)
    reproduce.reproduce("test", only=["02"], reports=reports, notebooks=two_notebooks, progress=False)
    assert (reports / "figures" / "01_data" / "fig.png").is_file()
    assert "(figures/01_data/fig.png)" in (reports / "index.md").read_text()
    assert not any((reports / ".staging").iterdir())


def test_the_checkouts_notebooks_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrnbError, match="no notebook starts with 99; notebooks: 01_eda_label_counts, 02_"):
        reproduce.reproduce("smoke", only=["99"], reports=tmp_path / "reports", progress=False)


def test_cli_notebooks_option(tmp_path, two_notebooks, monkeypatch, capsys):
    from cxrnb.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--profile", "smoke", "--notebooks", str(two_notebooks), "--only", "07"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == ("cxrnb reproduce: error: no notebook starts with 07; notebooks: "
                                            "01_data, 02_train\n")
    with pytest.raises(SystemExit):
        main(["reproduce", "--profile", "smoke", "--notebooks", str(tmp_path / "none")])
    assert "--notebooks DIR" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["''", "", "'  '"])
def test_an_empty_data_root_is_an_error(tmp_path, two_notebooks, value):
    with pytest.raises(CxrnbError, match="data_root is empty for notebook 01_data"):
        reproduce.reproduce("test", overrides=[f"data_root={value}"], reports=tmp_path / "reports",
                            notebooks=two_notebooks, progress=False)
    assert not (tmp_path / "reports").exists()


def test_a_cxrnb_error_in_a_notebook_is_shown_whole(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    message = (f"checkpoint {tmp_path / ('x' * 150) / 'checkpoint.pt'} is empty (0 bytes): move it aside "
               "(or delete it) and train again; `cxrnb train ... --restart` starts over from iteration 0")
    e = PapermillExecutionError(2, 3, "run = study.load_run('LSGAN')", "CxrnbError", message, [])
    assert message in reproduce._failure("04_lsgan", e, tmp_path / "04_lsgan.ipynb")


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_every_profile_names_only_parameters_the_notebooks_declare(profile):
    """A profile is checked like a user's --set: a renamed notebook parameter that a profile still
    sets (or sets with the wrong type) fails here, not an hour into `make reproduce`."""
    nbs = reproduce.find_notebooks(Path(__file__).resolve().parents[1] / "notebooks")
    defaults = {nb.stem: reproduce._defaults(nb) for nb in nbs}
    layer = profiles.PROFILES[profile]
    profiles.check_keys([layer], list(defaults), {name: set(d) for name, d in defaults.items()})
    profiles.check_types([layer], list(defaults), defaults)
    for section, values in layer.items():          # and a section's names are its own notebook's
        if profiles.is_section(section):
            (nb,) = [name for name in defaults if name.startswith(section)]
            assert set(values) <= set(defaults[nb]), (section, set(values) - set(defaults[nb]))
