"""Training seeds and arithmetic: replicates of a run, scores pooled over them, and what "auto" means."""

import numpy as np
import pandas as pd
import pytest
import torch

from cxrnb import study
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.evaluate import LADDER, REAL, over_training_seeds
from cxrnb.runtime import PRECISION_ENV, Precision, resolve_precision
from cxrnb.study import replicates


def test_pooled_spread_is_the_total_variance_over_seeds_and_subsets():
    """Hand computation: seeds' means 10, 12, 14 (variance 4), within-seed stds 1, 2, 2 (mean
    variance 3): pooled 12 ± sqrt(7). The ladder row is not trained, so it keeps its own numbers."""
    rows = pd.DataFrame([
        {"model": "G", "kind": "model", "space": "s", "metric": "FD", "mean": 10.0, "std": 1.0, "note": ""},
        {"model": "G · seed 1", "kind": "model", "space": "s", "metric": "FD", "mean": 12.0, "std": 2.0, "note": ""},
        {"model": "G · seed 2", "kind": "model", "space": "s", "metric": "FD", "mean": 14.0, "std": 2.0, "note": ""},
        {"model": LADDER + "blur", "kind": "ladder", "space": "s", "metric": "FD", "mean": 3.0, "std": 0.5,
         "note": ""},
        {"model": REAL, "kind": "reference", "space": "s", "metric": "FD", "mean": 1.0, "std": 0.2, "note": ""},
        {"model": "", "kind": None, "space": "inception-v3", "metric": "", "mean": np.nan, "std": np.nan,
         "note": "unavailable"}])
    out = over_training_seeds(rows, {"G · seed 1": "G", "G · seed 2": "G"}).set_index("model")
    assert out.loc["G", "mean"] == pytest.approx(12.0)
    assert out.loc["G", "std"] == pytest.approx(np.sqrt(4 + 3))
    assert out.loc["G", "n_seeds"] == 3
    assert (out.loc[LADDER + "blur", ["mean", "std", "n_seeds"]].tolist() == [3.0, 0.5, 1])
    assert "G · seed 1" not in out.index and out.loc["", "note"] == "unavailable"


@pytest.fixture(scope="module")
def run_and_replicate(phantom_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    run = study.train_run("VAE-beta0.1", str(phantom_root), image_size=32, max_images=32, batch_size=16,
                          epochs=1, device="cpu", runs_dir=runs, sample_at=[], progress=False)
    return run, replicates.replicate(run, seed=1, device="cpu", progress=False)


def test_a_replicate_is_the_same_recipe_with_another_seed(run_and_replicate):
    run, rep = run_and_replicate
    a, b = replicates.run_spec(run), replicates.run_spec(rep)
    assert b["seed"] == 1 and a["seed"] == 0
    same = ("preset", "image_size", "model_kwargs", "max_images", "batch_size", "epochs", "data_root")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert rep.prov.extra["iterations"] == run.prov.extra["iterations"] == 2
    weights = lambda r: torch.cat([p.detach().flatten() for p in r.model.parameters()])  # noqa: E731
    assert not torch.equal(weights(run), weights(rep))                 # another seed, another model
    assert rep.history.out_dir.parent.name == replicates.REPLICATES    # inside the run's own folder
    assert study.trained_presets(rep.history.out_dir.parents[2]) == ["VAE-beta0.1"]   # not a run of its own


def test_replicating_again_reloads_instead_of_retraining(run_and_replicate):
    run, rep = run_and_replicate
    again = replicates.replicate(run, seed=1, device="cpu", progress=False)
    for x, y in zip(rep.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(x, y)
    assert replicates.seed_replicates({"V": run}, [0, 1], device="cpu", progress=False).keys() == \
        {"VAE-beta0.1 · seed 1"}                                      # the run's own seed is the run


def test_the_arithmetic_twin_trains_the_same_seed_in_the_other_arithmetic(run_and_replicate):
    """fp32 runs get a bf16 twin and bf16 runs an fp32 one: the run trained in whatever "auto" means
    for this suite (fp32 on a CPU, bf16 under CXRNB_PRECISION=bf16)."""
    run, _ = run_and_replicate
    own = resolve_precision("auto", torch.device("cpu"))
    other = Precision.BF16 if own == Precision.FP32 else Precision.FP32
    assert replicates.other_precision(run) == other
    ((name, (model, twin)),) = replicates.arithmetic_twins({"V": run}, ["V"], device="cpu",
                                                          progress=False).items()
    assert (name, model) == (f"VAE-beta0.1 · seed 0 · {other}", "V")
    words = {Precision.FP32: "fp32", Precision.BF16: "bf16 autocast + channels_last"}
    assert twin.prov.precision == words[other] and run.prov.precision == words[own]
    assert replicates.run_spec(twin)["seed"] == 0


def test_precision_env_decides_what_auto_means(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision("auto", cpu) == Precision.FP32
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert resolve_precision("auto", cpu) == Precision.BF16
    assert resolve_precision("fp32", cpu) == Precision.FP32            # an explicit choice wins
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(CxrnbError, match="unknown precision 'fp16'"):
        resolve_precision("auto", cpu)


def test_a_model_name_not_among_the_loaded_runs_is_a_one_line_error():
    """A typo in seeded_models / arithmetic_check / gmm_models fails before any training, naming it."""
    runs = {"VAE-beta0.002": object(), "LSGAN": object()}
    with pytest.raises(CxrnbError, match=r"^Seed replicates asked for LSGNA, which is not among the loaded "
                                         r"models: VAE-beta0.002, LSGAN$"):
        replicates.seed_replicates(runs, [0, 1], names=["LSGNA"])
    with pytest.raises(CxrnbError, match="^Arithmetic twins asked for VAE-beta1,"):
        replicates.arithmetic_twins(runs, ["VAE-beta1"])
    assert list(replicates.named_runs(runs, ["LSGAN", "VAE-beta0.002"], "x")) == ["LSGAN", "VAE-beta0.002"]
