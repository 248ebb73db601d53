"""Checkpoint files that are not whole checkpoints (cut short, empty, overwritten): one line naming
the file, what is wrong and what to do, from `cxrnb train` and from `study.load_run`; and
`cxrnb train --restart`, the way past one."""

import os

import pytest

from cxrnb.cli import main
from cxrnb.errors import CxrnbError
from cxrnb.study.runs import load_run

TRAIN = ["train", "VAE-beta1", "--size", "32", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def spoil(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"half": data[: len(data) // 2], "empty": b"",
                      "random": os.urandom(len(data))}[how])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, phantom_root):
    """A finished run, trained once; each test spoils a copy of its checkpoint."""
    runs = tmp_path_factory.mktemp("runs")
    main([*TRAIN, "--root", str(phantom_root), "--out", str(runs)])
    return runs


@pytest.fixture
def spoilable(trained):
    checkpoint = trained / "VAE-beta1-32px" / "checkpoint.pt"
    good = checkpoint.read_bytes()
    yield checkpoint
    checkpoint.write_bytes(good)


@pytest.mark.parametrize("how, what", [("half", "cannot be read: cut short or corrupted"),
                                       ("empty", "is empty (0 bytes)"),
                                       ("random", "cannot be read: cut short or corrupted")])
def test_a_spoilt_checkpoint_is_one_line_from_cxrnb_train(trained, spoilable, phantom_root, capsys, how, what):
    spoil(spoilable, how)
    spoilt = spoilable.read_bytes()
    with pytest.raises(SystemExit) as stop:
        main([*TRAIN, "--root", str(phantom_root), "--out", str(trained)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cxrnb train: error: checkpoint {spoilable} {what}")
    assert "move it aside" in err and "--restart" in err
    assert spoilable.read_bytes() == spoilt                           # nothing overwritten


@pytest.mark.parametrize("how", ["half", "empty", "random"])
def test_a_spoilt_checkpoint_is_named_by_load_run(trained, spoilable, how):
    spoil(spoilable, how)
    with pytest.raises(CxrnbError) as err:
        load_run("VAE-beta1", trained)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"checkpoint {spoilable} ")
    assert "move it aside" in message


def test_a_file_that_is_not_a_checkpoint_is_named(trained, spoilable):
    import torch

    torch.save({"weights": torch.zeros(2)}, spoilable)              # loads, but is someone else's
    with pytest.raises(CxrnbError, match=r"is not a checkpoint written by cxrnb \(no 'model_class' in it\)"):
        load_run("VAE-beta1", trained)


def test_restart_trains_over_a_spoilt_checkpoint(tmp_path, phantom_root, capsys):
    runs = tmp_path / "runs"
    (runs / "VAE-beta1-32px").mkdir(parents=True)
    (runs / "VAE-beta1-32px" / "checkpoint.pt").write_bytes(b"\x00" * 100)
    main([*TRAIN, "--root", str(phantom_root), "--out", str(runs), "--restart"])
    assert "VAE-beta1: " in capsys.readouterr().out
    run = load_run("VAE-beta1", runs)                                # its checkpoint is whole again
    frame = run.history.frame
    assert set(frame.query("iteration == 0").part) == {"heldout"}      # monitored at 0: a fresh run
    assert set(frame.query("part == 'model'").iteration) == set(range(1, int(frame.iteration.max()) + 1))


def test_sighup_checkpoints_like_ctrl_c(tmp_path):
    """A closed terminal (or a scheduler that sends SIGHUP) stops training as Ctrl-C does."""
    import signal

    import torch

    from cxrnb.training.checkpoint import CHECKPOINT
    from cxrnb.training.loop import train
    from tests.test_train import SignalLoader, cfg, toy

    before = signal.getsignal(signal.SIGHUP)      # SIG_DFL, or SIG_IGN under nohup
    with pytest.raises(KeyboardInterrupt, match=r"SIGHUP at iteration 3 of 7: checkpoint written to"):
        train(toy(), SignalLoader(signal.SIGHUP, at=3), cfg(tmp_path, max_steps=7, checkpoint_every=None,
                                                             checkpoint_minutes=None))
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGHUP) is before                         # handler restored
