import json

import pytest

from cxrnb.provenance import Provenance


def test_line_states_source_count_size_epochs_and_seed(tmp_path):
    p = Provenance("real CXR14 subset", 1657, 64, epochs=3, seed=1, extra={"preset": "LSGAN"})
    line = p.line()
    for part in ("data: real CXR14 subset", "1,657 images", "64px", "epochs: 3", "seed 1",
                 "preset: LSGAN"):
        assert part in line
    assert "label table only" in Provenance("full CXR14", 112120, 0).line()
    saved = json.loads(p.save_json(tmp_path / "fig.png").read_text())
    assert saved["n_images"] == 1657 and saved["extra"] == {"preset": "LSGAN"}
    assert (tmp_path / "fig.json").is_file()


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown data source"):
        Provenance("my laptop", 1, 64)


def test_updated_copies_with_new_epochs_and_more_facts():
    base = Provenance("real CXR14 subset", 1657, 64, 0, 0, {"split": "1326/166/165"}, commit="abc")
    clf = base.updated(epochs=10, model="feature classifier")
    assert clf.epochs == 10 and clf.extra == {"split": "1326/166/165", "model": "feature classifier"}
    assert (base.epochs, base.extra) == (0, {"split": "1326/166/165"})          # the original is untouched
    assert base.updated(note="x").epochs == 0
    assert "epochs: 10 · seed 0 · split: 1326/166/165 · model: feature classifier · torch " in clf.line()
    assert clf.line().endswith(" · cxrnb abc")


def test_line_and_json_state_precision_device_and_library_versions(tmp_path):
    """What made a number: the arithmetic, the hardware and the libraries (a rerun elsewhere must be
    able to tell which of them changed)."""
    import numpy
    import torch

    p = Provenance("real CXR14 subset", 10, 64, precision="fp32", device="AMD EPYC, 2 threads, no native bf16")
    assert p.versions["torch"] == torch.__version__.split("+")[0] and p.versions["numpy"] == numpy.__version__
    assert set(p.versions) == {"torch", "torchvision", "diffusers", "numpy"}
    line = p.line()
    assert "fp32 on AMD EPYC, 2 threads, no native bf16" in line and f"numpy {numpy.__version__}" in line
    saved = json.loads(p.save_json(tmp_path / "fig.png").read_text())
    assert saved["precision"] == "fp32" and saved["versions"] == p.versions


def test_commit_is_dirty_for_code_changes_but_not_for_regenerated_reports(tmp_path, monkeypatch):
    import shutil
    import subprocess

    import cxrnb.provenance as provenance

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "reports").mkdir()
    shutil.copy(provenance.__file__, repo / "pkg" / "provenance.py")
    (repo / "reports" / "fig.json").write_text("{}")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x", "--allow-empty")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "y")
    monkeypatch.setattr(provenance, "__file__", str(repo / "pkg" / "provenance.py"))
    clean = provenance.git_commit()
    assert clean != "unknown" and not clean.endswith("+dirty")
    (repo / "reports" / "fig.json").write_text('{"new": 1}')        # a run regenerated the reports
    assert provenance.git_commit() == clean
    (repo / "pkg" / "provenance.py").write_text("# changed\n")      # the code changed
    assert provenance.git_commit() == clean + "+dirty"
