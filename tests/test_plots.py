"""Figures carry their provenance on the image and in a JSON beside it; grids place every image."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrnb.errors import CxrnbError
from cxrnb.provenance import Provenance
from cxrnb.report import plots

PROV = Provenance("synthetic phantom", n_images=64, image_size=32, epochs=1, seed=3,
                  extra={"preset": "VAE-beta0.1"})


def _footer(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts if t.get_gid() == "provenance")


def _check_saved(fig, path):
    out = plots.save_figure(fig, path, PROV)
    assert out == path and path.exists()
    # The footer is on the figure, word for word (modulo line wrapping).
    assert _footer(fig).replace("\n", " ") == PROV.line()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.std() > 0
    assert json.loads(path.with_suffix(".json").read_text()) == PROV.to_dict()
    assert [p.name for p in path.parent.iterdir()] and not list(path.parent.glob(".*tmp*"))


@pytest.mark.parametrize("make", [
    lambda: plots.image_grid(torch.rand(10, 1, 16, 16), nrow=5, title="samples"),
    lambda: plots.sample_rows({f"iteration {i}": torch.rand(4, 1, 16, 16) for i in (0, 100, 250)}),
    lambda: plots.loss_curves({"beta=1": pd.DataFrame({"step": range(20), "loss": np.arange(20.0)}),
                               "beta=0.1": pd.DataFrame({"step": range(20), "loss": np.ones(20)})},
                              keys=["loss"], smooth=5),
    lambda: plots.recon_pairs(torch.rand(6, 1, 16, 16), torch.rand(6, 1, 16, 16)),
    lambda: plots.nearest_pairs({"LSGAN": (torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)),
                                 "VAE": (torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16))}),
    lambda: plots.label_bar(pd.Series({"Effusion": 13317, "Hernia": 227}), title="labels"),
    lambda: plots.cooccurrence_heatmap(pd.DataFrame([[5, 1], [1, 3]], index=list("ab"), columns=list("ab"))),
    lambda: plots.hist(pd.Series(np.random.default_rng(0).normal(size=200), name="age")),
], ids=["image_grid", "sample_rows", "loss_curves", "recon_pairs", "nearest_pairs", "label_bar", "heatmap", "hist"])
def test_every_figure_saves_with_its_provenance(tmp_path, make):
    _check_saved(make(), tmp_path / "figs" / "fig.png")


def test_saving_twice_restamps_instead_of_stacking(tmp_path):
    fig = plots.hist(np.arange(10.0))
    plots.save_figure(fig, tmp_path / "a.png", PROV)
    plots.save_figure(fig, tmp_path / "b.png", PROV)
    assert sum(t.get_gid() == "provenance" for t in fig.texts) == 1


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    fig = plots.hist(np.arange(10.0))
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        plots.save_figure(fig, tmp_path / "fig.png", PROV)
    assert list(tmp_path.iterdir()) == []


def test_tile_places_image_i_at_row_i_div_nrow_column_i_mod_nrow():
    images = torch.rand(7, 1, 5, 6)
    grid, pad, nrow = plots.tile(images, nrow=3), 2, 3
    assert grid.shape == (pad + 3 * (5 + pad), pad + 3 * (6 + pad))   # 3 rows of 3 (last one short)
    for i in range(7):
        r, c = divmod(i, nrow)
        top, left = pad + r * (5 + pad), pad + c * (6 + pad)
        assert torch.equal(grid[top:top + 5, left:left + 6], images[i, 0])
    assert grid[0].eq(1).all()                                          # white separators


def test_smoothing_is_a_trailing_moving_average():
    y = pd.Series(np.random.default_rng(1).normal(size=30))
    window = 4
    expected = [y[max(0, i - window + 1): i + 1].mean() for i in range(len(y))]   # by hand
    np.testing.assert_allclose(plots.smoothed(y, window), expected)
    fig = plots.loss_curves(pd.DataFrame({"step": range(30), "loss": y}), keys=["loss"], smooth=window)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), expected)


def test_publish_shows_the_saved_file(tmp_path):
    image = plots.publish(plots.image_grid(torch.rand(4, 1, 16, 16)), tmp_path / "g.png", PROV)
    assert image.data == (tmp_path / "g.png").read_bytes()


def test_sample_rows_wraps_many_panels_and_long_titles():
    """Sixteen models' samples (notebook 07) become rows of six panels, and a long name wraps."""
    names = [f"model {i} · GMM sampler · labelled post hoc" for i in range(16)]
    fig = plots.sample_rows({name: torch.rand(4, 1, 16, 16) for name in names})
    axes = fig.get_axes()
    assert len(axes) == 16
    assert len({round(ax.get_position().y0, 3) for ax in axes}) == 3       # ceil(16 / 6) rows
    assert len({round(ax.get_position().x0, 3) for ax in axes}) == 6
    assert fig.get_size_inches()[0] == pytest.approx(3.2 * 6)
    titles = [ax.get_title() for ax in axes]
    assert all(max(map(len, t.splitlines())) <= plots.TITLE_WIDTH for t in titles)
    assert [t.replace("\n", " ") for t in titles] == names                   # wrapped, not cut
    few = plots.sample_rows({f"iteration {i}": torch.rand(4, 1, 16, 16) for i in (0, 100, 250)})
    assert len({round(ax.get_position().y0, 3) for ax in few.get_axes()}) == 1  # three stay in one row


def test_sample_rows_refuses_an_empty_set_of_panels():
    with pytest.raises(CxrnbError, match="no panels"):
        plots.sample_rows({})
    with pytest.raises(CxrnbError, match=r"^sample_rows needs at least one panel per row, not per_row=0$"):
        plots.sample_rows({"a": torch.rand(4, 1, 16, 16)}, per_row=0)
    with pytest.raises(CxrnbError, match="^nearest_pairs got no panels"):
        plots.nearest_pairs({})


def test_nearest_pairs_wraps_sixteen_models_into_rows_of_six():
    """The memorisation figure of notebook 07 (sixteen models) was one strip 3,851 px wide whose
    titles overlapped; it now wraps like the samples figure, and no panel title outruns its panel."""
    names = [f"model {i} · GMM sampler · labelled post hoc" for i in range(16)]
    pair = (torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16))
    fig = plots.nearest_pairs({name: pair for name in names}, title="closest pairs")
    axes = fig.get_axes()
    assert len({round(ax.get_position().y0, 3) for ax in axes}) == 3       # ceil(16 / 6) rows
    assert len({round(ax.get_position().x0, 3) for ax in axes}) == 6
    assert fig.get_size_inches()[0] == pytest.approx(plots.PANEL_WIDTH * 6)
    titles = [ax.get_title() for ax in axes]
    assert all(max(map(len, t.splitlines())) <= plots.TITLE_WIDTH for t in titles)
    assert [t.replace("\n", " ") for t in titles] == names
    width, height = fig.get_size_inches()
    assert height < width / 3                        # strips two images tall, not square panels


def test_the_compute_figure_extends_each_tail_as_its_power_law():
    """quality_vs_compute on an exact power law FD = 100 t^-0.5 measured to 100 s: the dashed
    extension runs from the last point (FD 10) to 10x the run, where by hand FD = 100 * 1000^-0.5."""
    from cxrnb.evaluation.evaluate import LADDER

    curves = pd.DataFrame({"model": ["A"] * 4, "seconds": [0.0, 10.0, 30.0, 100.0],
                           "FD": [900.0, 100 * 10 ** -0.5, 100 * 30 ** -0.5, 10.0], "FD sd": [1.0] * 4})
    fig = plots.quality_vs_compute(curves, pd.DataFrame({"model": [LADDER + "blur"], "mean": [20.0]}))
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    x, y = dashed[0].get_data()
    assert x[0] == pytest.approx(100) and y[0] == pytest.approx(10)
    assert x[-1] == pytest.approx(1000) and y[-1] == pytest.approx(100 / 1000 ** 0.5)
    # with the real-vs-real floor at FD 5 the line stops where 100 t^-0.5 = 5, at t = 400 s
    floored = plots.quality_vs_compute(curves, pd.DataFrame({"model": [LADDER + "blur"], "mean": [20.0]}),
                                       floor=5.0)
    (dashed,) = [line for line in floored.axes[0].get_lines() if line.get_linestyle() == "--"]
    x, y = dashed.get_data()
    assert x[-1] == pytest.approx(400) and y[-1] == pytest.approx(5.0)
