"""The notebook steps: a run trains, reloads bit-identically, and reads off curves and samples."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cxrnb import study
from cxrnb.errors import CxrnbError
from cxrnb.provenance import Provenance
from cxrnb.study import scoring


@pytest.fixture(scope="module")
def vae_run(phantom_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run = study.train_run("VAE-beta0.1", str(phantom_root), image_size=64, max_images=32, batch_size=16,
                          epochs=1, device="cpu", runs_dir=runs, sample_at=[0, 1], progress=False)
    return run, runs


def test_train_then_load_gives_the_same_model(vae_run, phantom_root):
    run, runs = vae_run
    again = study.load_run("VAE-beta0.1", runs, str(phantom_root), device="cpu")
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    assert again.prov.extra["iterations"] == 2 and again.prov.epochs == 1
    assert again.prov.source == "synthetic phantom" and again.prov.n_images == 32


def test_curves_samples_grids_and_reconstructions(vae_run):
    run, _ = vae_run
    c = study.curves(run)
    held = study.heldout_curves(run)                   # the diagnostics at the start and the end
    assert list(held.index) == [0, 2] and {"kl", "active_units", "heldout_mse", "mean_image_mse"} <= set(held)
    c = c[["loss", "recon", "kl", "mse"]].dropna()
    assert list(c.index) == [1, 2]
    # the loss is what the loop logged: recon + beta * kl, row by row
    assert torch.allclose(torch.tensor(c["loss"].values), torch.tensor((c["recon"] + 0.1 * c["kl"]).values),
                          rtol=1e-4)
    assert list(study.sample_grids(run)) == ["iteration 0", "iteration 1", "iteration 2"]
    s = study.samples(run, n=5, seed=1, size=32)
    assert s.shape == (5, 1, 32, 32) and 0 <= s.min() and s.max() <= 1
    assert torch.equal(s, study.samples(run, n=5, seed=1, size=32))        # seeded
    x, r = study.reconstructions(run, n=3)
    assert x.shape == r.shape == (3, 1, 64, 64)
    table = study.summary([run])
    assert table.loc[0, "parameters"] == run.model.param_counts()["total"]
    d = study.diagnose(run, "test")
    assert table.loc[0, "active_units"] == d.active_units and table.loc[0, "test_mse"] == round(d.mse, 5)
    assert 0 < table.loc[0, "real_ms_ssim"] < 1 and table.loc[0, "loss"] == "paper"


def test_conditional_samples_use_the_given_labels(phantom_root, tmp_path):
    run = study.train_run("FS-GMVAE-V3", str(phantom_root), image_size=64, max_images=16, batch_size=16,
                          epochs=1, device="cpu", runs_dir=tmp_path, weights=None, progress=False)
    y = torch.zeros(4, 15)
    y[:2, 0] = 1
    a = scoring.conditional_samples(run, y, size=64)
    b = scoring.conditional_samples(run, torch.zeros(4, 15), size=64)
    assert a.shape == (4, 1, 64, 64)
    assert torch.equal(a[2:], b[2:]) and not torch.equal(a[:2], b[:2])    # same z, other labels


def test_load_run_errors(vae_run, tmp_path, real_root):
    _, runs = vae_run
    with pytest.raises(CxrnbError, match="no trained run of LSGAN"):
        study.load_run("LSGAN", runs)
    with pytest.raises(CxrnbError, match="was trained on"):
        study.load_run("VAE-beta0.1", runs, str(real_root))


def test_unconditional_model_refused_for_usefulness(vae_run):
    with pytest.raises(CxrnbError, match="not label-conditioned"):
        scoring.conditional_samples(vae_run[0], torch.zeros(2, 15), size=64)


def test_auroc_table_counts_the_positives_behind_each_value(phantom_root):
    from cxrnb.evaluation.ruler import load_ruler

    data = scoring.eval_data(str(phantom_root), 32)
    assert len(data.train) + len(data.val) + len(data.test) == 64
    table = scoring.auroc_table(load_ruler(), data)          # the shipped ruler scores any image size
    assert len(table) == 14 and (table["positives in test"] == data.test_y[:, :14].sum(0).numpy()).all()


def test_eval_data_with_max_train_holds_the_training_subset_a_model_saw(phantom_root):
    """Capped: the training rows are exactly those a run with max_images and that seed trains on
    (the loader's rows); val and test stay whole; the provenance counts the subset."""
    from cxrnb.data.cache import prepare

    whole, capped = scoring.eval_data(str(phantom_root), 32), scoring.eval_data(str(phantom_root), 32, seed=3,
                                                                               max_train=10)
    cache = prepare(str(phantom_root), size=32)
    rows = cache.loader("train", batch_size=5, seed=3, max_images=10).rows
    assert torch.equal(capped.train[:, 0], torch.from_numpy(cache.images[np.sort(rows)]))
    assert torch.equal(capped.train_y, torch.from_numpy(cache.labels[np.sort(rows)]))
    assert len(capped.train) == 10 < len(whole.train)
    assert torch.equal(capped.test, whole.test) and torch.equal(capped.val, whole.val)
    assert capped.prov.extra["train / val / test images"] == f"10 / {len(whole.val)} / {len(whole.test)}"


def test_a_capped_evaluation_refuses_runs_that_saw_other_images(vae_run, phantom_root):
    """vae_run trained on 32 images (seed 0): an evaluation capped to those 32 accepts it, at any image
    size (the same files); one capped to other images refuses it in one line; the whole split accepts it."""
    run, _ = vae_run
    same = scoring.eval_data(str(phantom_root), 64, max_train=32)
    index = run.cache.index.set_index("row")
    assert same.train_images == index.loc[run.cache.loader("train", 16, max_images=32).rows, "image"].tolist()
    smaller, whole = scoring.eval_data(str(phantom_root), 32, max_train=32), scoring.eval_data(str(phantom_root), 64)
    for data in (same, smaller, whole):
        scoring.check_training_subset({"vae": run}, data)
    for other in (scoring.eval_data(str(phantom_root), 64, seed=1, max_train=32),
                  scoring.eval_data(str(phantom_root), 64, max_train=16)):
        with pytest.raises(CxrnbError, match=r"^vae trained on other images \(max_images=32, seed 0\) than the "
                                             r"(32|16) this evaluation uses"):
            scoring.check_training_subset({"vae": run}, other)


def test_fixed_label_batch_cycles_when_there_are_fewer_images_than_samples(phantom_root):
    from cxrnb.data.cache import prepare
    from cxrnb.models import build
    from cxrnb.training.loop import fixed_inputs

    model = build("FS-GMVAE-V3", image_size=64, weights=None)
    loader = prepare(str(phantom_root), size=64).loader("train", batch_size=16, max_images=16)
    z, y = fixed_inputs(model, loader, n=40, seed=0)
    first = next(iter(loader.epoch_batches(0)))[1]
    assert z.shape[0] == y.shape[0] == 40
    assert torch.equal(y[:16], first) and torch.equal(y[16:32], first)


def test_provenance_of_several_runs_names_the_ones_trained_longer():
    def run(preset, epochs):
        return SimpleNamespace(preset=preset, prov=Provenance("real CXR14 subset", 100, 64, epochs, 0))
    prov = study.provenance([run("A", 2), run("B", 10), run("C", 2)])
    assert prov.epochs == 2 and prov.extra == {"presets": "A, B, C", "except": "B 10 epochs"}
    assert "epochs: 2 · seed 0 · presets: A, B, C · except: B 10 epochs" in prov.line()
    same = study.provenance([run("A", 3), run("B", 3)])
    assert same.epochs == 3 and "except" not in same.extra


def test_provenance_of_several_runs_keeps_their_arithmetic_and_machine():
    """A figure of several runs states how they computed and where: once when they share it."""
    def run(preset, precision):
        return SimpleNamespace(preset=preset, prov=Provenance("real CXR14 subset", 100, 64, 2, 0,
                                                              precision=precision, device="AMD EPYC"))
    prov = study.provenance([run("A", "fp32"), run("B", "fp32")])
    assert (prov.precision, prov.device) == ("fp32", "AMD EPYC") and "fp32 on AMD EPYC" in prov.line()
    mixed = study.provenance([run("A", "fp32"), run("B", "bf16 autocast")])
    assert mixed.precision == "fp32 / bf16 autocast"


def test_epochs_per_preset_overrides_some_and_refuses_a_name_not_trained():
    assert study.epochs_per_preset(["A", "B"], 2, {"B": 10}) == {"A": 2, "B": 10}
    with pytest.raises(CxrnbError, match="epochs_for names GMVAE-V9, which is not among the presets"):
        study.epochs_per_preset(["GMVAE-V8"], 2, {"GMVAE-V9": 10})


def test_timed_samples_per_run_draw_what_samples_draws_and_price_each_model(vae_run):
    run, _ = vae_run
    generated, seconds = scoring.timed_samples_per_run({"a": run}, n=6, seed=2, size=32)
    assert torch.equal(generated["a"], study.samples(run, n=6, seed=2, size=32))   # the same draw
    assert seconds["a"] > 0
    ddpm = SimpleNamespace(model=SimpleNamespace(sample_steps=25, solver="ddim"))
    fast = SimpleNamespace(model=SimpleNamespace(sample_steps=10, solver="dpm-solver++"))
    line = scoring.sampling_line({"a": run, "DDPM": ddpm, "fast": fast}, {"a": 0.00123, "DDPM": 0.456, "fast": 0.2},
                                 "cpu")
    assert line.startswith("Sampling cost on cpu (") and line.endswith(
        "a 0.0012; DDPM 0.46 (25 DDIM steps); fast 0.2 (10 DPM-Solver++ steps).")
