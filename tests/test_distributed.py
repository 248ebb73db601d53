"""Data-parallel training (cxrnb.training.distributed): 2 CPU processes, gloo, against 1 process.

The reference is the plain single-process loop. Two processes with a global batch of 8 (2 x 4) must
log the same losses as one process with batch 8, to floating-point tolerance. For that to be the
SAME computation, the test removes the two things that differ by design (see cxrnb.training.distributed):
- noise: both runs draw the model's noise from a table indexed by (draw number, global batch row),
  so the image in row 5 gets the same noise whether it sits on rank 1 or in the single batch;
- BatchNorm: replaced by a per-image normalisation (GroupNorm with one group), since CPU ranks
  normalise with their own half batch (torch's SyncBatchNorm, which the CUDA path uses, has no CPU
  kernel). Not by identity: without any normalisation the LSGAN generator's activations shrink
  layer by layer to where rounding flips ReLUs, and a 1-process run split into two half batches by
  hand (no DDP at all) already drifts by 1% at its third G step.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cxrnb.data.cache import ArrayLoader
from cxrnb.errors import CxrnbError
from cxrnb.models import build
from cxrnb.training import distributed
from cxrnb.training.loop import TrainConfig, train

WORLD, GLOBAL_BATCH = 2, 8
_randn, _randn_like = torch.randn, torch.randn_like


class RowNoise:
    """torch.randn / randn_like as a function of (draw number, global batch row) only."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.draws = rank, world, 0

    def randn(self, *shape, generator=None, **kw):
        if generator is not None:                   # seeded draws (fixed sample latents): untouched
            return _randn(*shape, generator=generator, **kw)
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        g = torch.Generator().manual_seed(1000 + self.draws)
        self.draws += 1
        table = _randn((shape[0] * self.world, *shape[1:]), generator=g)
        return table[self.rank * shape[0]:(self.rank + 1) * shape[0]].to(kw.get("device") or "cpu")

    def randn_like(self, t, **kw):
        return self.randn(*t.shape, device=t.device).to(t.dtype)

    def patches(self):
        return [mock.patch.object(torch, "randn", self.randn),
                mock.patch.object(torch, "randn_like", self.randn_like)]


def model_without_batchnorm(preset: str, size: int):
    torch.manual_seed(0)
    model = build(preset, image_size=size, weights=None)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(1, child.num_features))
    return model


def loader() -> ArrayLoader:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 64, 64), dtype=np.uint8)
    labels = (rng.random((24, 15)) < 0.2).astype(np.float32)
    return ArrayLoader(images, labels, batch_size=GLOBAL_BATCH, seed=3)      # 3 batches per epoch


def images(u8_size: int, ld: ArrayLoader) -> ArrayLoader:
    """The loader at another image size (the VAE's smallest is 32 px)."""
    small = torch.nn.functional.avg_pool2d(torch.from_numpy(ld.images).float()[:, None], 64 // u8_size)
    ld.images = small[:, 0].round().byte().numpy()
    return ld


CASES = {  # name: (preset, image size, iterations)
    "vae": ("VAE-beta0.1", 32, 4),
    "gan": ("LSGAN", 64, 1),     # one D and three G steps; see test_two_processes_log_...
}


def run_case(name: str, out: Path, rank: int = 0, world: int = 1, steps: int | None = None,
             row_noise: bool = True, out_name: str | None = None) -> None:
    preset, size, iterations = CASES[name]
    model = model_without_batchnorm(preset, size)
    # fp32 explicitly: DDP's equivalence to one process is checked to fp32 rounding; bf16's own
    # rounding is tested against fp32 in test_precision and test_train, on both paths
    cfg = TrainConfig(max_steps=steps or iterations, batch_size=GLOBAL_BATCH, seed=5, device="cpu",
                      precision="fp32", progress=False, sample_at=(), n_samples=4, log_every=1,
                      out_dir=str(out / (out_name or name)))
    with ExitStack() as stack:
        for p in RowNoise(rank, world).patches() if row_noise else []:
            stack.enter_context(p)
        train(model, images(size, loader()) if size != 64 else loader(), cfg)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               out / f"{out_name or name}-rank{rank}.pt")


def worker(rank: int, port: int, out: str) -> None:
    """One of the two processes (torch.multiprocessing.spawn); env:// as torchrun would set it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    out = Path(out)
    with distributed.session("cpu"):
        assert distributed.world_size() == WORLD and distributed.rank() == rank
        for name in CASES:
            run_case(name, out, rank, WORLD)
        # resume: 2 + 2 iterations with the real per-rank noise == 4 straight
        run_case("vae", out, rank, WORLD, row_noise=False, out_name="straight")
        run_case("vae", out, rank, WORLD, steps=2, row_noise=False, out_name="resumed")
        run_case("vae", out, rank, WORLD, row_noise=False, out_name="resumed")
        try:                                        # a loss that does not average over ranks: refused
            train(build("VAE-upstream-beta1", image_size=32, weights=None), images(32, loader()),
                  TrainConfig(max_steps=1, batch_size=GLOBAL_BATCH, device="cpu", progress=False,
                              sample_at=(), out_dir=str(out / "upstream")))
        except CxrnbError as e:
            (out / f"upstream-rank{rank}.txt").write_text(str(e))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path / "history.csv")


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_log_the_losses_of_one_with_the_same_global_batch(two_process_runs, tmp_path, name):
    """The LSGAN is compared over one iteration only: after a few steps, Adam's early updates
    (about lr * sign(g)) turn rounding in near-zero gradient entries into lr-sized weight
    differences, and the GAN amplifies them. That is not DDP: averaging the two half batches'
    gradients by hand with all_reduce gave the same numbers as DDP to the last digit."""
    run_case(name, tmp_path)                         # the reference: one process, batch 8
    one, two = history(tmp_path / name), history(two_process_runs / name)
    assert not two.duplicated(["iteration", "part", "name"]).any()     # rank 0 alone wrote it
    pd.testing.assert_frame_equal(one[["iteration", "part", "name"]], two[["iteration", "part", "name"]])
    np.testing.assert_allclose(two.value, one.value, rtol=1e-4, atol=1e-6)
    assert set(one.part) == ({"d", "g"} if name == "gan" else {"model"})
    # DDP kept the ranks' weights identical, and they are the single process's weights
    ref = torch.load(tmp_path / f"{name}-rank0.pt")
    ranks = [torch.load(two_process_runs / f"{name}-rank{rank}.pt") for rank in range(WORLD)]
    for k, v in ref.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        if name == "vae":
            torch.testing.assert_close(ranks[0][k].float(), v.float(), rtol=1e-3, atol=1e-5, msg=k)


def test_resume_on_two_processes_is_exact(two_process_runs):
    """Each rank's noise stream is in the checkpoint: 2 + 2 iterations equal 4 straight, bit for bit."""
    pd.testing.assert_frame_equal(history(two_process_runs / "straight"), history(two_process_runs / "resumed"))
    ckpt = torch.load(two_process_runs / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == WORLD and len(ckpt["rng_ranks"]) == WORLD
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # own noise


def test_a_batch_sum_loss_is_refused_on_two_processes(two_process_runs):
    for rank in range(WORLD):
        assert "train this preset on one process" in (two_process_runs / f"upstream-rank{rank}.txt").read_text()


def test_resume_on_another_number_of_processes_is_refused(two_process_runs, tmp_path):
    import shutil

    shutil.copytree(two_process_runs / "straight", tmp_path / "vae")
    with pytest.raises(CxrnbError, match="trained on 2 process"):
        run_case("vae", tmp_path, steps=5, row_noise=False)


def test_the_global_batch_must_split_evenly():
    with pytest.raises(CxrnbError, match="does not split over 3 processes"):
        loader().shard(0, 3)
    ld = loader()
    shards = [list(ld.shard(r, WORLD).epoch_batches(1)) for r in range(WORLD)]
    for b, (u8, y) in enumerate(ld.epoch_batches(1)):           # the shards, in rank order, are the batch
        torch.testing.assert_close(torch.cat([s[b][0] for s in shards]), u8)
        torch.testing.assert_close(torch.cat([s[b][1] for s in shards]), y)


def test_torchrun_trains_a_preset_from_the_command_line(tmp_path, phantom_root):
    """The README's command, for real: torchrun, 2 processes, the phantom, one writer."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()),
                           "-m", "cxrnb", "train", "VAE-beta1", "--root", str(phantom_root), "--size", "32",
                           "--max-images", "24", "--batch-size", "8", "--epochs", "1", "--device", "cpu",
                           "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("VAE-beta1:") == 1 and "processes    2 (DDP)" in done.stdout
    run = tmp_path / "runs" / "VAE-beta1-32px"
    h = history(run)
    assert list(h[h.part == "model"].iteration.unique()) == [1, 2, 3]   # 24 images / global batch 8
    assert (run / "provenance.json").is_file() and (run / "run.json").is_file()
