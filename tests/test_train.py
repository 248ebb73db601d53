"""The shared training loop, on a toy two-part model and an in-memory loader (16 px, a few steps)."""

import copy
import math
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from cxrnb.bench.timing import throughput
from cxrnb.errors import CxrnbError
from cxrnb.models.base import GenerativeModel, InputSpec, adam
from cxrnb.runtime import pick_device
from cxrnb.training.checkpoint import CHECKPOINT, load_checkpoint
from cxrnb.training.history import HISTORY
from cxrnb.training.loop import Stepper, TrainConfig, train

S = 16


class Toy(GenerativeModel):
    """Two linear layers with their own optimisers and a 1:2 schedule, like the LSGAN's D:G = 1:3.

    The loss draws noise (so resuming must restore the RNG) and can be made NaN from one iteration on.
    """

    family = "vae"
    input_spec = InputSpec(size=S, channels=1, value_range="tanh")
    latent_dim = 4
    schedule = (("enc", 1), ("dec", 2))

    def __init__(self, nan_from: int | None = None, conditional: bool = False):
        super().__init__()
        self.conditional = conditional
        self.enc = nn.Linear(S * S, self.latent_dim)
        self.dec = nn.Linear(self.latent_dim + (15 if conditional else 0), S * S)
        self.nan_from, self.calls = nan_from, 0

    def optimizer(self, part, fused=True):
        return adam(getattr(self, part).parameters(), fused, lr=1e-2)

    def decode(self, z, y=None):
        z = torch.cat([z, y], 1) if self.conditional else z
        return torch.tanh(self.dec(z)).view(-1, 1, S, S)

    def loss(self, x, y, part="enc"):
        self.calls += part == "enc"
        z = self.enc(x.flatten(1)) + 0.1 * torch.randn(len(x), self.latent_dim)
        mse = (self.decode(z, y) - x).pow(2).mean()
        if self.nan_from is not None and self.calls >= self.nan_from:
            mse = mse * float("nan")
        return {"loss": mse, "z_norm": z.norm(dim=1).mean()}

    def sample_latent(self, n, generator=None):
        return torch.randn(n, self.latent_dim, generator=generator, device=generator.device)


class ToyLoader:
    """The loader protocol of COMMON.md: a seeded permutation per epoch, resumable mid-epoch."""

    def __init__(self, n=40, batch_size=8, seed=0, size=S):
        rng = np.random.default_rng(123)
        self.images = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
        self.labels = (rng.random((n, 15)) < 0.2).astype(np.float32)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self):
        return len(self.images) // self.batch_size

    def epoch_batches(self, epoch, start=0):
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield torch.from_numpy(self.images[idx]), torch.from_numpy(self.labels[idx])

    def __iter__(self):
        return self.epoch_batches(0)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(**kw):
    torch.manual_seed(0)
    return Toy(**kw)


def cfg(tmp_path, name="run", **kw):
    kw = {"device": "cpu", "progress": False, "n_samples": 16, "log_every": 1, **kw}
    return TrainConfig(out_dir=str(tmp_path / name), **kw)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pick_device():
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == want
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(CxrnbError, match="unknown device"):
        pick_device("gpu0")
    with pytest.raises(CxrnbError, match="unsupported device"):
        pick_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_refuses_missing_cuda():
    with pytest.raises(CxrnbError, match="not available"):
        pick_device("cuda")


def test_config_rejects_bad_values():
    with pytest.raises(CxrnbError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(CxrnbError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(CxrnbError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=0)


def test_empty_loader_is_refused(tmp_path):
    with pytest.raises(CxrnbError, match="no batch"):
        train(toy(), ToyLoader(n=4, batch_size=8), cfg(tmp_path))


def test_schedule_history_and_epochs(tmp_path):
    """1.5 epochs of 5 batches = 8 iterations (ceil); the dec optimiser steps twice per iteration."""
    model, loader = toy(), ToyLoader()
    h = train(model, loader, cfg(tmp_path, epochs=1.5))
    ckpt = torch.load(h.checkpoint, weights_only=True)
    assert ckpt["step"] == math.ceil(1.5 * len(loader)) == 8
    adam_steps = {p: int(next(iter(o["state"].values()))["step"]) for p, o in ckpt["optimizers"].items()}
    assert adam_steps == {"enc": 8, "dec": 16}
    # one row per (iteration, part, logged name); the CSV on disk is the History's frame
    assert list(h.frame.columns) == ["iteration", "epoch", "part", "name", "value"]
    assert len(h.frame) == 8 * 2 * 2
    pd.testing.assert_frame_equal(h.frame, pd.read_csv(tmp_path / "run" / HISTORY))
    np.testing.assert_allclose(h.frame.epoch, h.frame.iteration / len(loader))
    wide = h.frame[h.frame.name == "loss"].pivot(index="iteration", columns="part", values="value")
    assert list(wide.columns) == ["dec", "enc"] and list(wide.index) == list(range(1, 9))
    assert h.images_per_s > 0 and not (tmp_path / "run" / (".checkpoint.tmp.pt")).exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])      # both paths, on any CPU
def test_logged_loss_is_the_loss_of_that_batch(tmp_path, precision):
    """The first enc loss logged equals the toy's loss recomputed by hand on the first batch, in the
    arithmetic the run used (bf16 autocast recomputed under the same autocast)."""
    model, loader = toy(), ToyLoader()
    ref = toy()
    torch.manual_seed(7)  # train seeds with cfg.seed; reproduce the noise draw it makes
    u8, y = next(loader.epoch_batches(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        want = ref.loss(ref.input_spec.to_model(u8), y, "enc")["loss"].float().item()
    h = train(model, loader, cfg(tmp_path, max_steps=1, seed=7, precision=precision, channels_last=False))
    got = h.frame.query("iteration == 1 and part == 'enc' and name == 'loss'").value.item()
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("first,second", [(2, 4), (3, 7)])  # mid-epoch; across an epoch boundary
def test_resume_is_exact(tmp_path, first, second):
    loader = ToyLoader()
    straight = toy()
    h_straight = train(straight, loader, cfg(tmp_path, "straight", max_steps=second))

    resumed = toy()
    train(resumed, loader, cfg(tmp_path, "resumed", max_steps=first))
    again = toy()   # a new process would rebuild the model from scratch
    h_resumed = train(again, loader, cfg(tmp_path, "resumed", max_steps=second))

    for k, v in params(straight).items():
        assert torch.equal(v, params(again)[k]), k
    pd.testing.assert_frame_equal(h_straight.frame, h_resumed.frame)
    assert torch.load(h_resumed.checkpoint, weights_only=True)["step"] == second


class SignalLoader(ToyLoader):
    """Sends this process ``signum`` while yielding batch number ``at`` (counted over the whole run),
    as Ctrl-C or a scheduler's SIGTERM would arrive mid-iteration."""

    def __init__(self, signum, at, **kw):
        super().__init__(**kw)
        self.signum, self.at, self.given = signum, at, 0

    def epoch_batches(self, epoch, start=0):
        for batch in super().epoch_batches(epoch, start):
            self.given += 1
            if self.given == self.at:
                os.kill(os.getpid(), self.signum)
            yield batch


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_checkpoints_the_finished_iteration_and_resumes_exactly(tmp_path, signum):
    straight = toy()
    h_straight = train(straight, ToyLoader(), cfg(tmp_path, "straight", max_steps=7))
    before = signal.getsignal(signal.SIGINT)      # Python's default, or SIG_IGN under nohup / `&`
    with pytest.raises(KeyboardInterrupt,
                       match=r"at iteration 3 of 7: checkpoint written to .*run the same command again"):
        train(toy(), SignalLoader(signum, at=3), cfg(tmp_path, "stopped", max_steps=7, checkpoint_every=None,
                                                      checkpoint_minutes=None))
    assert torch.load(tmp_path / "stopped" / CHECKPOINT, weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before                        # handlers restored
    again = toy()
    h_again = train(again, ToyLoader(), cfg(tmp_path, "stopped", max_steps=7))
    for k, v in params(straight).items():
        assert torch.equal(v, params(again)[k]), k
    pd.testing.assert_frame_equal(h_straight.frame, h_again.frame)


def test_checkpoints_also_come_on_a_timer(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 100))                        # every perf_counter call: 100 s later
    monkeypatch.setattr("cxrnb.training.loop.time.perf_counter", lambda: float(next(clock)))
    saved = []
    monkeypatch.setattr("cxrnb.training.loop.save_checkpoint",
                        lambda path, model, optimizers, step, *a, **kw: saved.append(step))
    train(toy(), ToyLoader(), cfg(tmp_path, max_steps=4, checkpoint_every=None, checkpoint_minutes=3))
    assert saved[:2] == [2, 4] and saved[-1] == 4              # ~200 s per iteration here: every second one
    with pytest.raises(CxrnbError, match="checkpoint_minutes must be > 0"):
        TrainConfig(checkpoint_minutes=0)
    with pytest.raises(CxrnbError, match="epochs must be finite"):
        TrainConfig(epochs=float("inf"))


def test_resume_cuts_history_written_after_the_checkpoint(tmp_path):
    """Rows logged after the last checkpoint (a crash) are dropped, not duplicated, on resume."""
    loader = ToyLoader()
    train(toy(), loader, cfg(tmp_path, max_steps=2))
    with open(tmp_path / "run" / HISTORY, "a") as f:
        f.write("3,0.6,enc,loss,9.0\n")
    h = train(toy(), loader, cfg(tmp_path, max_steps=4))
    assert sorted(h.frame.iteration.unique()) == [1, 2, 3, 4]
    assert len(h.frame) == 4 * 2 * 2 and 9.0 not in h.frame.value.values


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    loader = ToyLoader()
    good = toy()
    train(good, loader, cfg(tmp_path, "good", max_steps=2))
    with pytest.raises(CxrnbError, match=r"part 'enc' is nan at iteration 3"):
        train(toy(nan_from=3), loader, cfg(tmp_path, "bad", max_steps=5, checkpoint_every=2,
                                                  log_every=10))
    kept = toy()
    assert load_checkpoint(tmp_path / "bad" / CHECKPOINT, kept)["step"] == 2
    for k, v in params(good).items():
        assert torch.equal(v, params(kept)[k]), k


def test_checkpoint_of_another_model_is_refused(tmp_path):
    loader = ToyLoader()
    train(toy(), loader, cfg(tmp_path, max_steps=1))

    class Other(Toy):
        pass

    with pytest.raises(CxrnbError, match="model_class"):
        train(Other(), loader, cfg(tmp_path, max_steps=2))
    renamed = toy()
    renamed.preset = "LSGAN"
    with pytest.raises(CxrnbError, match="preset"):
        load_checkpoint(tmp_path / "run" / CHECKPOINT, renamed)
    with pytest.raises(CxrnbError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere.pt", toy())


def test_resume_with_other_data_or_past_the_end_is_refused(tmp_path):
    train(toy(), ToyLoader(), cfg(tmp_path, max_steps=3))
    with pytest.raises(CxrnbError, match="batches per epoch"):
        train(toy(), ToyLoader(batch_size=4), cfg(tmp_path, max_steps=4))
    with pytest.raises(CxrnbError, match="seed 0"):
        train(toy(), ToyLoader(), cfg(tmp_path, max_steps=4, seed=1))
    with pytest.raises(CxrnbError, match="already at iteration 3"):
        train(toy(), ToyLoader(), cfg(tmp_path, max_steps=2))


def test_sample_grids_decode_the_fixed_latents(tmp_path):
    """Grids at the asked iterations and the final one; each equals torchvision's grid of
    model.generate(z_fixed) recomputed from the saved state; iteration 0 is the same across runs."""
    loader = ToyLoader()
    h = train(toy(), loader, cfg(tmp_path, "a", max_steps=3, sample_at=(0, 2)))
    assert sorted(h.samples) == [0, 2, 3]
    ckpt = torch.load(h.checkpoint, weights_only=True)
    assert torch.equal(ckpt["z_fixed"],
                       torch.randn(16, Toy.latent_dim, generator=torch.Generator().manual_seed(0)))
    model = toy()
    model.load_state_dict(ckpt["model"])
    grid = make_grid(model.eval().generate(ckpt["z_fixed"]), nrow=4)  # sqrt(16) per row
    want = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)[0].numpy()
    got = np.asarray(Image.open(h.samples[3]).convert("L"))
    assert got.shape == (2 + 4 * (S + 2), 2 + 4 * (S + 2))
    np.testing.assert_array_equal(got, want)
    h2 = train(toy(), loader, cfg(tmp_path, "b", max_steps=1, sample_at=(0,)))
    np.testing.assert_array_equal(np.asarray(Image.open(h.samples[0])),
                                  np.asarray(Image.open(h2.samples[0])))


def test_conditional_model_gets_a_fixed_label_batch(tmp_path):
    loader = ToyLoader(batch_size=8)
    h = train(toy(conditional=True), loader, cfg(tmp_path, max_steps=2, n_samples=12))
    y_fixed = torch.load(h.checkpoint, weights_only=True)["y_fixed"]
    first = torch.cat([y for _, y in loader.epoch_batches(0)])[:12]
    assert torch.equal(y_fixed, first)


def test_fresh_run_replaces_an_old_one(tmp_path):
    loader = ToyLoader()
    train(toy(), loader, cfg(tmp_path, max_steps=3, sample_at=(0, 1)))
    h = train(toy(), loader, cfg(tmp_path, max_steps=2, resume=False))
    assert sorted(h.samples) == [0, 2] and h.frame.iteration.max() == 2


def test_fused_adam_keeps_the_papers_settings_and_steps():
    """The fast path's fused Adam (CUDA and CPU) is the same optimiser: same lr and betas, same update
    as torch's default Adam kernel."""
    from cxrnb.models import build

    torch.manual_seed(0)
    a = build("LSGAN", image_size=64)
    b = copy.deepcopy(a)
    plain, fused = a.optimizer("d", fused=False), b.optimizer("d")
    assert not plain.param_groups[0]["fused"]
    assert fused.param_groups[0]["fused"] and fused.defaults["betas"] == (0.5, 0.999)
    assert fused.defaults["lr"] == plain.defaults["lr"] == 2e-4
    u8, y = next(iter(RealLoader(64)))
    for model, opt in ((a, plain), (b, fused)):
        torch.manual_seed(1)
        model.loss(model.input_spec.to_model(u8), y, "d")["loss"].backward()
        opt.step()
    for (k, v), w in zip(a.D.state_dict().items(), b.D.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)


def test_throughput_counts_images_over_time():
    model, loader = toy(), ToyLoader()
    step = Stepper(model, torch.device("cpu"))
    u8, y = next(iter(loader))
    calls = []
    rate = throughput(lambda a, b: calls.append(step(a, b)), u8, y, torch.device("cpu"), steps=3)
    assert len(calls) == 4 and rate > 0   # one warm-up + three timed steps


# --- the real models ------------------------------------------------------------------------------------

class RealLoader(ToyLoader):
    """ToyLoader's protocol at another image size."""

    def __init__(self, size, n=8, batch_size=4):
        super().__init__(n, batch_size)
        self.images = np.random.default_rng(1).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.mark.parametrize("preset", ["LSGAN", "VAE-beta0.1", "FS-GMVAE-V1"])
def test_real_presets_train_and_resume_exactly(tmp_path, preset):
    """BatchNorm, two optimisers (LSGAN D:G = 1:3) and the models' own noise: 1 + 2 steps == 3. With
    FS-GMVAE-V1, Table 4's decoder of linear layers (the study trains it; the smoke notebooks do not)."""
    from cxrnb.models import build

    def fresh():
        torch.manual_seed(0)
        return build(preset, image_size=64)

    loader = RealLoader(64)
    straight = fresh()
    h = train(straight, loader, cfg(tmp_path, "straight", max_steps=3, n_samples=4))
    parts = {p for p, _ in straight.schedule}
    assert set(h.frame.part) == parts and h.frame.value.map(math.isfinite).all()
    assert set(h.samples) == {0, 3}
    train(fresh(), loader, cfg(tmp_path, "resumed", max_steps=1, n_samples=4))
    again = fresh()
    train(again, loader, cfg(tmp_path, "resumed", max_steps=3, n_samples=4))
    for k, v in params(straight).items():
        assert torch.equal(v, params(again)[k]), k


def test_lsgan_steps_g_three_times_per_batch(tmp_path):
    from cxrnb.models import build

    torch.manual_seed(0)
    h = train(build("LSGAN", image_size=64), RealLoader(64), cfg(tmp_path, max_steps=2, n_samples=4))
    opt = torch.load(h.checkpoint, weights_only=True)["optimizers"]
    steps = {p: int(next(iter(o["state"].values()))["step"]) for p, o in opt.items()}
    assert steps == {"d": 2, "g": 6}


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("bf16", 2e-2)])   # bf16: 8-bit mantissa
def test_channels_last_computes_the_same_losses(tmp_path, precision, tol):
    """The fast path's memory format changes the layout, not the maths: D's losses of iteration 1
    (computed before any update) agree to the precision's rounding; the run says it trained NHWC,
    and hands the model back in the layout a reload builds (so its samples equal the reload's)."""
    from cxrnb.models import build

    first = []
    for cl in (False, True):
        torch.manual_seed(0)
        model = build("LSGAN", image_size=64)
        h = train(model, RealLoader(64), cfg(tmp_path, f"cl{cl}", max_steps=1, n_samples=4,
                                             channels_last=cl, precision=precision))
        first.append(h.frame.query("part == 'd'").set_index("name").value)
        assert h.arithmetic.endswith("+ channels_last") == cl
        assert model.D[2].weight.is_contiguous()
    pd.testing.assert_series_equal(first[0], first[1], rtol=tol, atol=tol)


def test_cli_train_is_the_notebooks_train_run(tmp_path, phantom_root, capsys):
    """`cxrnb train` and the notebooks share study.train_run: one run layout, diagnostics included."""
    import json

    from cxrnb.cli import main
    from cxrnb.study.runs import load_run

    main(["train", "VAE-elbo-beta1", "--root", str(phantom_root), "--size", "32", "--epochs", "1",
          "--batch-size", "8", "--out", str(tmp_path / "runs"), "--device", "cpu"])
    out_dir = tmp_path / "runs" / "VAE-elbo-beta1-32px"
    assert str(out_dir / "checkpoint.pt") in capsys.readouterr().out
    prov = json.loads((out_dir / "provenance.json").read_text())
    assert prov["source"] == "synthetic phantom" and prov["image_size"] == 32
    run = load_run("VAE-elbo-beta1", tmp_path / "runs")
    assert sorted(run.history.samples)[0] == 0 and "heldout" in set(run.history.frame.part)
    with pytest.raises(SystemExit) as stop:
        main(["train", "LSGAN2", "--root", str(phantom_root), "--out", str(tmp_path / "runs")])
    assert stop.value.code == 2 and "unknown model preset 'LSGAN2'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("precision,rtol", [("fp32", 1e-5), ("bf16", 2e-2)])   # bf16: 8-bit mantissa
def test_compiled_loss_trains_like_eager(tmp_path, precision, rtol):
    """cfg.compile only changes how the loss runs (inductor's own RNG switched to eager's here);
    under bf16 the fused kernels round differently, within bf16's precision."""
    import torch._inductor.config

    eager = train(toy(), ToyLoader(), cfg(tmp_path, "eager", max_steps=3, precision=precision))
    with torch._inductor.config.patch(fallback_random=True):
        compiled = train(toy(), ToyLoader(), cfg(tmp_path, "compiled", max_steps=3, compile=True,
                                                 precision=precision))
    pd.testing.assert_frame_equal(eager.frame, compiled.frame, rtol=rtol, atol=1e-6)


def test_fs_gmvae_trains_with_fixed_labels_and_a_frozen_encoder(tmp_path):
    """The conditional path with a real model: grids decode a fixed label batch, and the
    "Encoder in Eval" weights are left as they were while the rest trains."""
    from cxrnb.models import build

    torch.manual_seed(0)
    model = build("FS-GMVAE-V3", image_size=64, weights=None)
    before = params(model)
    loader = RealLoader(64)
    h = train(model, loader, cfg(tmp_path, max_steps=2, n_samples=4))
    ckpt = torch.load(h.checkpoint, weights_only=True)
    assert torch.equal(ckpt["y_fixed"], torch.cat([y for _, y in loader.epoch_batches(0)])[:4])
    after = params(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed)


@pytest.mark.parametrize("argv, message", [
    (["--size", "0"], "multiple of 32"),
    (["--size", "-64"], "multiple of 32"),
    (["--epochs", "inf"], "epochs must be finite"),
    (["--epochs", "0"], "epochs must be > 0"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--checkpoint-minutes", "0"], "checkpoint_minutes must be > 0"),
])
def test_cli_train_bad_numbers_are_one_line(tmp_path, phantom_root, capsys, argv, message):
    from cxrnb.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "VAE-beta1", "--root", str(phantom_root), "--out", str(tmp_path), "--batch-size", "16",
              *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err      # one line, before any work


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, phantom_root, capsys, monkeypatch):
    from cxrnb.cli import main

    def full(obj, f, *a, **k):
        raise OSError(28, "No space left on device", str(f))
    monkeypatch.setattr("cxrnb.training.checkpoint.torch.save", full)
    with pytest.raises(SystemExit) as stop:
        main(["train", "VAE-beta1", "--root", str(phantom_root), "--out", str(tmp_path), "--size", "32",
              "--batch-size", "16", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and err.startswith("cxrnb train: error: no space left on the disk writing ")
    assert "checkpoint.pt" in err and not list(tmp_path.rglob("*.tmp*"))


def test_a_full_disk_outside_the_atomic_writes_is_one_line_too(capsys, monkeypatch):
    """A write that bypasses paths.atomic (a library's own file) and fails with ENOSPC or EDQUOT gets
    the same one line, not a traceback."""
    import errno

    from cxrnb import cli

    for code in (errno.ENOSPC, errno.EDQUOT):
        def full(args, code=code):
            raise OSError(code, "No space left on device", "/runs/x.bin")
        monkeypatch.setattr(cli, "_dispatch", full)
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", "VAE-beta1", "--root", "phantom"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("cxrnb train: error: no space left on the disk writing /runs/x.bin (")  # free MB of /
        assert err.endswith(" MB free): free some space (old runs/, data/cache/, pytest's temporary folders) "
                            "and run again\n") and err.count("\n") == 1


def test_the_cpu_loop_uses_fused_adam():
    """On a CPU torch's Adam defaults to a Python loop over parameters; the Stepper fuses it."""
    step = Stepper(toy(), torch.device("cpu"))
    assert all(o.defaults["fused"] for o in step.optimizers.values())


def test_fused_adamw_is_the_same_adamw():
    """AdamW (the DDPM's optimiser) keeps its class, weight decay and update when fused."""
    a, b = (torch.nn.Parameter(torch.ones(3)) for _ in range(2))
    plain = adam([a], False, adamw=True, lr=1e-2, weight_decay=0.1)
    fused = adam([b], True, adamw=True, lr=1e-2, weight_decay=0.1)
    assert type(fused) is torch.optim.AdamW and fused.defaults["fused"]
    assert fused.defaults["weight_decay"] == 0.1
    for p, opt in ((a, plain), (b, fused)):
        for _ in range(3):
            opt.zero_grad()
            (p * torch.arange(3.0)).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_resuming_an_unfused_checkpoint_keeps_the_fused_kernel(tmp_path):
    """A checkpoint written before Adam was fused on the CPU carries fused=None in its groups;
    load_state_dict would take that over, so the resumed run (and its checkpoints) keep fused."""
    train(toy(), ToyLoader(), cfg(tmp_path, max_steps=2))
    path = tmp_path / "run" / CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    for state in ckpt["optimizers"].values():
        for group in state["param_groups"]:
            group.update(fused=None, foreach=None)           # as an older, unfused run saved it
    torch.save(ckpt, path)
    step = Stepper(toy(), torch.device("cpu"))
    load_checkpoint(path, step.model, step.optimizers)
    assert all(g["fused"] for o in step.optimizers.values() for g in o.param_groups)
    assert all(int(s["step"]) > 0 for o in step.optimizers.values() for s in o.state.values())


def test_snapshots_keep_the_weights_of_their_iteration_with_the_seconds_spent(tmp_path):
    from cxrnb.training.checkpoint import load_snapshot, snapshot_path

    loader = ToyLoader()
    full = train(toy(), loader, cfg(tmp_path, "full", max_steps=6, snapshot_at=(0, 2, 4)))
    assert sorted(p.name for p in (tmp_path / "full" / "snapshots").iterdir()) == [
        "iter_000000.pt", "iter_000002.pt", "iter_000004.pt"]
    short = toy()
    train(short, loader, cfg(tmp_path, "short", max_steps=4))          # the same run, stopped at 4
    at4 = toy()
    meta = load_snapshot(snapshot_path(tmp_path / "full", 4), at4)
    for k, v in params(short).items():
        assert torch.equal(v, params(at4)[k]), k
    assert meta["iteration"] == 4 and meta["epoch"] == pytest.approx(4 / len(loader))
    seconds = [load_snapshot(snapshot_path(tmp_path / "full", i), toy())["seconds"] for i in (0, 2, 4)]
    final = torch.load(full.checkpoint, weights_only=True)["seconds"]
    assert seconds[0] == 0.0 and seconds[0] < seconds[1] < seconds[2] < final
    # a resumed run counts its seconds on from the checkpoint's
    before = torch.load(tmp_path / "short" / "checkpoint.pt", weights_only=True)["seconds"]
    assert before > 0
    train(toy(), loader, cfg(tmp_path, "short", max_steps=6, snapshot_at=(5,)))
    assert load_snapshot(snapshot_path(tmp_path / "short", 5), toy())["seconds"] > before


def test_a_snapshot_count_spaces_them_evenly_from_the_start(tmp_path):
    from cxrnb.training.loop import snapshot_iterations

    # by hand: 5 snapshots over 10 iterations at 0, 2, 4, 6, 8; over 7 at round(k * 7 / 3) = 0, 2, 5
    assert snapshot_iterations(TrainConfig(snapshots=5), 10) == {0, 2, 4, 6, 8}
    assert snapshot_iterations(TrainConfig(snapshots=3, snapshot_at=(6,)), 7) == {0, 2, 5, 6}
    assert snapshot_iterations(TrainConfig(), 7) == set()
    train(toy(), ToyLoader(), cfg(tmp_path, "run", max_steps=6, snapshots=3))
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "iter_000000.pt", "iter_000002.pt", "iter_000004.pt"]
    with pytest.raises(CxrnbError, match="snapshots must be >= 0"):
        TrainConfig(snapshots=-1)
