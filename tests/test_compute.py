"""Quality against compute: a run's weight snapshots scored in training order (cxrnb.study.compute)."""

from types import SimpleNamespace

import pytest
import torch
from test_train import ToyLoader, cfg, params, toy

from cxrnb.errors import CxrnbError
from cxrnb.study import compute
from cxrnb.training.checkpoint import load_snapshot, snapshot_path
from cxrnb.training.loop import train


def test_a_curve_scores_each_snapshot_then_the_final_checkpoint(tmp_path):
    """compute.quality_curve on a run with snapshots: one row per point, in training order, each scored with
    the weights of that point (checked against the snapshot files), the run's own model untouched."""
    loader = ToyLoader()
    model = toy()
    history = train(model, loader, cfg(tmp_path, "run", max_steps=6, snapshot_at=(2, 4)))
    run = SimpleNamespace(preset="toy", model=model, history=history, batch_size=8)
    first = next(iter(params(model).values())).clone()
    table = compute.quality_curve(run, lambda m: {"w": float(next(iter(params(m).values())).sum())})
    assert table.iteration.tolist() == [2, 4, 6] and table.images.tolist() == [16, 32, 48]
    for i in (2, 4):
        at = toy()
        load_snapshot(snapshot_path(tmp_path / "run", i), at)
        assert table.set_index("iteration").w[i] == pytest.approx(float(next(iter(params(at).values())).sum()))
    assert table.w.iloc[-1] == pytest.approx(float(first.sum()))
    assert torch.equal(next(iter(params(model).values())), first)            # the run's model kept its weights
    assert table.seconds.is_monotonic_increasing


def test_a_run_without_snapshots_has_no_curve(tmp_path):
    model = toy()
    history = train(model, ToyLoader(), cfg(tmp_path, "run", max_steps=2))
    with pytest.raises(CxrnbError, match="no weight snapshots"):
        compute.quality_curve(SimpleNamespace(preset="toy", model=model, history=history, batch_size=8), lambda m: {})
