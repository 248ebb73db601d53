"""The explorer's controls in Python: slider order and folding, reset, live update, distinct mixture
components, the nearest training image, "save", and interpolation, on test_explore's linear toy."""

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from latent_toy import S, Toy, decode_by_hand
from PIL import Image

from cxrnb.models import expost
from cxrnb.provenance import Provenance
from cxrnb.study import explore, widgets


@pytest.fixture(scope="module")
def axes(toy, images):
    return explore.principal_directions(toy, images, k=3, progress=False)


def _shown(image_widget) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_widget.value))).astype(float)


def test_slider_order_puts_the_largest_move_first_and_folds_the_invisible():
    shown, folded = explore.slider_order(torch.tensor([0.002, 0.05, 0.0, 0.02, 0.009]), visible=0.01)
    assert shown == [1, 3] and folded == [4, 0, 2]


def test_folded_sliders_hide_behind_a_toggle_that_counts_them(toy, axes):
    moves = explore.sensitivity(toy, *axes)                       # ~0.0093, 0.0091, 0.0070 on the toy
    visible = float(moves.sort().values[1] - 1e-4)                # two shown, one folded
    ui = widgets.explorer_widget(toy, *axes, visible=visible)
    assert ui.order == moves.argsort(descending=True)[:2].tolist() and ui.folded == [int(moves.argmin())]
    assert ui.fold_toggle.description.startswith("1 directions move it <")
    hidden = ui.children[0].children[0].children[3]
    assert hidden.layout.display == "none" and hidden.children[0].children[0] is ui.sliders[ui.folded[0]]
    ui.fold_toggle.value = True
    assert hidden.layout.display == ""


def test_reset_returns_every_control_and_the_image_to_the_start(toy, axes):
    ui = widgets.explorer_widget(toy, *axes)
    start = ui.image.value
    ui.sliders[0].value, ui.sliders[2].value, ui.menu.value = 2.0, -1.0, 1
    assert ui.image.value != start and ui.panel.delta.value != "Δ 0.0000 from the first image"
    ui.reset.click()
    assert [s.value for s in ui.sliders] == [0.0, 0.0, 0.0] and ui.menu.value == widgets.MEAN
    assert ui.image.value == start and ui.panel.delta.value == "Δ 0.0000 from the first image"


def test_delta_is_the_mean_absolute_change_from_the_first_image(toy, axes):
    mean, directions, std = axes
    ui = widgets.explorer_widget(toy, *axes)
    ui.sliders[1].value = 2.0
    change = np.abs(decode_by_hand(toy, mean + 2.0 * std[1] * directions[1]) - decode_by_hand(toy, mean)).mean()
    assert float(ui.panel.delta.value.split()[1]) == pytest.approx(change, abs=1e-4)


def test_live_update_follows_the_measured_redraw_unless_told(toy, axes):
    fast = widgets.explorer_widget(toy, *axes)
    assert fast.panel.latency_s < widgets.LIVE_BELOW and fast.live
    assert all(s.continuous_update for s in fast.sliders)
    off = widgets.explorer_widget(toy, *axes, live=False)
    assert not off.live and not any(s.continuous_update for s in off.sliders)


def test_components_that_decode_alike_are_folded_from_the_menu(axes):
    twin = Toy()
    twin.means[1] = twin.means[0]                                  # component 1 is component 0 again
    assert explore.distinct_components(twin) == [0, 2]
    ui = widgets.explorer_widget(twin, *axes)
    assert [v for _, v in ui.menu.options] == [widgets.MEAN, 0, 2]
    assert ui.components_note.value.startswith("1 of 3 components folded")
    assert explore.distinct_components(Toy()) == [0, 1, 2]


def _nearest(images, test):
    """A fake run whose cache serves ``images`` as training and ``test`` as test split."""
    splits = {"train": images, "test": test}
    return explore.NearestTraining.from_run(SimpleNamespace(cache=SimpleNamespace(split_images=lambda s: splits[s])))


def test_nearest_training_image_and_its_threshold_match_a_brute_force_search(images):
    test = torch.randint(0, 256, (30, 1, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    near = _nearest(images, test)
    x, t = images.double().flatten(1) / 255, test.double().flatten(1) / 255
    rms = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).mean(-1).numpy())       # noqa: E731
    assert near.threshold == pytest.approx(np.quantile(rms(t, x).min(1), 0.05), rel=1e-4)
    query = (images[7, 0].double() / 255 + 0.01).clamp(0, 1).float()
    i, d = near(query)
    assert i == 7 == rms(query.double().flatten()[None], x).argmin()
    assert d == pytest.approx(rms(query.double().flatten()[None], x).min(), abs=1e-5)   # cdist in float32
    assert near.describe(i, d) == (f"nearest training image #7: RMS distance {d:.3f}, among the closest 5% "
                                   f"(real test images: 5% lie within {near.threshold:.3f} of theirs)")
    far = near.describe(3, near.threshold + 0.1)                  # as far as a typical new image: no copy
    assert "not among the closest 5%" in far


def test_the_panel_shows_the_nearest_training_image(toy, axes, images):
    near = _nearest(images, images[:10])
    ui = widgets.explorer_widget(toy, *axes, nearest=near)
    i, _ = near(toy.generate(axes[0][None]).detach()[0, 0])
    np.testing.assert_allclose(_shown(ui.panel.nearest_image), images[i, 0].numpy(), atol=0.51)
    assert ui.panel.nearest_label.value.startswith(f"nearest training image #{i}:")


def test_save_writes_the_shown_image_and_its_latent_with_provenance(toy, axes, tmp_path):
    mean, directions, std = axes
    phantom_prov = Provenance("synthetic phantom", n_images=40, image_size=S)
    ui = widgets.explorer_widget(toy, *axes, save_dir=tmp_path / "kept", prov=phantom_prov, name="toy")
    ui.sliders[0].value = 1.0
    ui.panel.save_button.click()
    ui.panel.save_button.click()                                   # a second save never overwrites the first
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["toy-000.png", "toy-000.pt",
                                                                     "toy-001.png", "toy-001.pt"]
    kept = torch.load(tmp_path / "kept" / "toy-000.pt")
    torch.testing.assert_close(kept["latent"], mean + 1.0 * std[0] * directions[0])
    assert kept["sliders"] == [1.0, 0.0, 0.0] and kept["preset"] == "toy"
    assert kept["provenance"]["source"] == phantom_prov.source
    np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "kept" / "toy-000.png")),
                               decode_by_hand(toy, kept["latent"]).reshape(S, S) * 255, atol=0.51)
    assert ui.panel.saved.value.startswith("saved toy-001.png and toy-001.pt")


def test_interpolation_decodes_the_great_circle_between_two_chosen_images(toy, images):
    ui = widgets.interpolation_widget(toy, images, n_choices=5)
    mu = explore.encode_means(toy, images[:5], progress=False)
    ui.a.value, ui.b.value, ui.t.value = 3, 4, 0.0
    np.testing.assert_allclose(_shown(ui.image), decode_by_hand(toy, mu[3]).reshape(S, S) * 255, atol=0.51)
    ui.t.value = 0.25
    z = explore.slerp(mu[3], mu[4], torch.tensor([0.25]))[0]
    np.testing.assert_allclose(_shown(ui.image), decode_by_hand(toy, z).reshape(S, S) * 255, atol=0.51)
    assert len(ui.a.options) == 5
    ends = np.abs(decode_by_hand(toy, mu[4]) - decode_by_hand(toy, mu[3])).mean()
    assert ui.note.value == f"Δ {ends:.3f} over 0→1"


class Plain(Toy):
    """The toy without a mixture prior, as a Gaussian VAE."""

    n_components = 0


def test_an_ex_post_mixture_fills_the_menu_of_a_model_without_one(axes):
    model = Plain()
    d = model.latent_dim
    directions = torch.eye(d, dtype=torch.float64)[:2]            # the mixture lives in 2 of the 8 dims
    means = torch.tensor([[4.0, 0.0], [0.0, -4.0], [4.0, 1e-4]], dtype=torch.float64)   # the third ≈ the first
    mixture = expost.Mixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means,
                             torch.eye(2, dtype=torch.float64).expand(3, 2, 2), torch.zeros(d, dtype=torch.float64),
                             directions)
    sampler = expost.ExPostSampler(model, mixture, expost.Coordinates.MEAN, pd.DataFrame())
    z, w = explore.mixture_latents(sampler)
    torch.testing.assert_close(z[1], torch.tensor([0.0, -4.0] + [0.0] * (d - 2)))
    ui = widgets.explorer_widget(model, *axes, mixture=sampler)
    assert ui.menu.options == (("data mean", widgets.MEAN), ("GMM component 0 (50%)", 0), ("GMM component 1 (30%)", 1))
    assert ui.components_note.value.startswith("1 of 3 GMM components folded")
    ui.menu.value = 1
    np.testing.assert_allclose(_shown(ui.image), decode_by_hand(model, z[1]).reshape(S, S) * 255, atol=0.51)
    assert widgets.explorer_widget(model, *axes).menu is None      # no mixture, no menu


def test_save_without_a_folder_or_into_an_unwritable_one_says_so(toy, axes, tmp_path):
    ui = widgets.explorer_widget(toy, *axes)
    ui.panel.folder.value = "  "
    assert ui.panel.save() is None and ui.panel.saved.value == "type a folder to save into"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ui.panel.folder.value = str(blocker / "sub")
    assert ui.panel.save() is None and ui.panel.saved.value.startswith("not saved:")


def test_saves_are_numbered_after_the_last_one(toy, tmp_path):
    image, z = torch.zeros(S, S), torch.zeros(8)
    (tmp_path / "toy-007.png").write_bytes(b"")
    assert explore.save_view(image, z, tmp_path, "toy")[0].name == "toy-008.png"


def test_a_nan_move_is_folded_not_lost():
    shown, folded = explore.slider_order(torch.tensor([0.05, float("nan"), 0.001]))
    assert shown == [0] and sorted(folded) == [1, 2]


def test_the_simplex_explorer_resets_to_the_data_mean_weights(toy):
    base, comps = torch.full((8,), 1 / 8), torch.arange(3)
    ui = widgets.simplex_widget(toy, base, comps)
    start = ui.image.value
    ui.sliders[0].value = 0.9
    assert ui.image.value != start
    ui.reset.click()
    assert [s.value for s in ui.sliders] == pytest.approx([1 / 8] * 3) and ui.image.value == start


def test_every_redraw_shows_on_the_timing_label(toy, axes):
    ui = widgets.explorer_widget(toy, *axes, live=False)         # live=False: no measuring redraws
    assert ui.panel.redraws == 1 and ui.panel.timing.value.startswith("· redraw 1: ")
    ui.sliders[0].value = 0.5
    ui.sliders[0].value = 0.5                                     # no change, no redraw
    assert ui.panel.redraws == 2 and ui.panel.timing.value.startswith("· redraw 2: ")
