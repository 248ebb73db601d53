"""The latent explorer on a toy linear model, checked against numpy and hand-computed latents."""

import io

import numpy as np
import pytest
import torch
from latent_toy import D, NoEncoder, S, Toy, decode_by_hand
from PIL import Image

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models.presets import build
from cxrnb.study import explore, widgets


def test_principal_directions_equal_numpy_svd(toy, images):
    x = images.numpy().reshape(len(images), -1) / 255.0
    mu = x @ toy.enc.weight.detach().numpy().T + toy.enc.bias.detach().numpy()
    centred = mu - mu.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)

    k = 5
    mean, directions, std = explore.principal_directions(toy, images, k=k, progress=False)
    np.testing.assert_allclose(mean, mu.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, s[:k] / np.sqrt(len(x) - 1), rtol=1e-5)
    for d, ref in zip(directions.numpy(), vt[:k]):
        assert min(np.abs(d - ref).max(), np.abs(d + ref).max()) < 1e-4   # equal up to sign
    # The same from a loader's (u8, y) batches.
    loader = [(images[i:i + 16], torch.zeros(len(images[i:i + 16]), 15)) for i in range(0, 40, 16)]
    _, from_loader, _ = explore.principal_directions(toy, loader, k=k, progress=False)
    torch.testing.assert_close(from_loader, directions)


def test_interpolation_endpoints_decode_the_encoded_means(toy, images):
    a, b = images[0, 0], images[1, 0]
    mu = toy.encode(torch.stack([a, b]).float().div(255).unsqueeze(1))[0].detach()
    for method in ("linear", "slerp"):
        out = explore.interpolate(toy, a, b, n=5, method=method)
        assert out.shape == (5, 1, S, S)
        np.testing.assert_allclose(out[0, 0].flatten(), decode_by_hand(toy, mu[0]), atol=1e-5)
        np.testing.assert_allclose(out[-1, 0].flatten(), decode_by_hand(toy, mu[1]), atol=1e-5)
    mid = explore.interpolate(toy, a, b, n=3)[1, 0].flatten()
    np.testing.assert_allclose(mid, decode_by_hand(toy, (mu[0] + mu[1]) / 2), atol=1e-5)


def test_slerp_midpoint_of_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = explore.slerp(a, b, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid, torch.tensor([2 ** -0.5, 2 ** -0.5]))      # on the circle, at 45 degrees


def test_traverse_rows_walk_each_direction_and_centre_column_is_the_base():
    gan = NoEncoder()
    mean, directions, std = explore.random_directions(D, k=3, seed=0)
    torch.testing.assert_close(directions @ directions.T, torch.eye(3))        # orthonormal
    grid = explore.traverse(gan, mean, directions, std, steps=(-2, 0, 2))
    pad = 2
    assert grid.shape == (pad + 3 * (S + pad), pad + 3 * (S + pad))
    for row in range(3):
        for col, step in enumerate((-2, 0, 2)):
            top, left = pad + row * (S + pad), pad + col * (S + pad)
            z = mean + step * directions[row]
            expected = decode_by_hand(gan.toy, z).reshape(S, S)               # tanh output mapped to [0, 1]
            np.testing.assert_allclose(grid[top:top + S, left:left + S], expected, atol=1e-5)


def test_component_samples_decode_that_components_draws(toy):
    out = explore.component_samples(toy, component=2, n=4, seed=7)
    z = toy.sample_latent(4, torch.Generator().manual_seed(7), component=2)
    np.testing.assert_allclose(out.flatten(1), decode_by_hand(toy, z), atol=1e-5)


def _shown(widget) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(widget.image.value)))


def test_widget_slider_and_component_menu_redraw_the_image(toy, images):
    mean, directions, std = explore.principal_directions(toy, images, k=3, progress=False)
    ui = widgets.explorer_widget(toy, mean, directions, std)
    assert len(ui.sliders) == 3 and list(ui.menu.options)[1:] == [("component 0", 0), ("component 1", 1),
                                                                    ("component 2", 2)]
    assert ui.menu.label == "data mean"                                          # shown, not blank
    at_mean = ui.image.value
    np.testing.assert_allclose(_shown(ui), decode_by_hand(toy, mean).reshape(S, S) * 255, atol=0.51)

    ui.sliders[1].value = 1.5
    assert ui.image.value != at_mean
    z = mean + 1.5 * std[1] * directions[1]
    np.testing.assert_allclose(_shown(ui), decode_by_hand(toy, z).reshape(S, S) * 255, atol=0.51)

    ui.menu.value = 2
    base = toy.sample_latent(1, torch.Generator().manual_seed(0), component=2)[0]
    np.testing.assert_allclose(_shown(ui), decode_by_hand(toy, base + 1.5 * std[1] * directions[1])
                               .reshape(S, S) * 255, atol=0.51)
    ui.sliders[1].value, ui.menu.value = 0.0, widgets.MEAN
    assert ui.image.value == at_mean


def test_sensitivity_is_the_half_difference_of_the_images_one_std_either_side(toy, images):
    mean, directions, std = explore.principal_directions(toy, images, k=3, progress=False)
    moves = explore.sensitivity(toy, mean, directions, std)
    for i in range(3):
        plus = decode_by_hand(toy, mean + std[i] * directions[i])
        minus = decode_by_hand(toy, mean - std[i] * directions[i])
        assert moves[i].item() == pytest.approx(np.abs(plus - minus).mean() / 2, rel=1e-5)
    ui = widgets.explorer_widget(toy, mean, directions, std, visible=0.008)     # the toy's moves are ~0.9%
    assert [n.value for n in ui.notes] == [f"Δ {m:.3f} per unit" for m in moves.tolist()]
    rows = ui.children[0].children[0].children                    # the visible rows, largest move first
    assert rows[0].children[0] is ui.sliders[int(moves.argmax())]


@pytest.mark.slow
def test_a_trained_vae_moves_the_image_along_its_first_direction_a_collapsed_one_does_not(
        phantom_root, tmp_path, one_thread):
    """On the phantom, 120 iterations of the ELBO VAE: its first principal direction changes the
    decoded image visibly; the same model with its posterior switched off (a collapsed VAE) does not."""
    from cxrnb import study

    run = study.train_run("VAE-elbo-beta1", str(phantom_root), image_size=32, epochs=40, batch_size=16,
                          device="cpu", runs_dir=tmp_path, progress=False)
    train = run.cache.split_images("train")
    mean, directions, std = explore.principal_directions(run.model, train, k=2, progress=False)
    moves = explore.sensitivity(run.model, mean, directions, std)
    assert moves[0] > 0.01                                    # over 1% of the grey range per slider unit
    # notebook 05's "auto": beside a barely trained paper-loss VAE, the explorer picks this one
    study.train_run("VAE-beta1", str(phantom_root), image_size=32, epochs=1, batch_size=16, device="cpu",
                    runs_dir=tmp_path, progress=False)
    chosen, table = study.explorable("auto", "vae", tmp_path, device="cpu")
    assert chosen.preset == "VAE-elbo-beta1" and list(table.preset) == ["VAE-elbo-beta1", "VAE-beta1"]
    assert table.chosen.tolist() == [True, False] and bool(table.collapsed[1])
    assert table.val_mse[0] < table.val_mse[1]
    with torch.no_grad():                                     # collapse: every image encodes to 0
        run.model.mean.weight.zero_()
        run.model.mean.bias.zero_()
    _, _, std0 = explore.principal_directions(run.model, train, k=2, progress=False)
    assert explore.sensitivity(run.model, mean, directions, std0).max() < 1e-4


def test_component_spread_is_zero_for_identical_components_and_grows_with_their_distance(toy):
    same = Toy()
    same.means = torch.zeros(3, D)
    assert explore.component_spread(same) == pytest.approx(0, abs=1e-7)
    apart = explore.component_spread(toy)                      # means 3 * N(0, I) apart
    assert apart > 0.05
    eps = torch.randn(1, D, generator=torch.Generator().manual_seed(0))
    images = np.stack([decode_by_hand(toy, toy.means[c] + eps[0]) for c in range(3)])
    assert apart == pytest.approx(np.abs(images - images.mean(0)).mean(), rel=1e-5)
    text = explore.sensitivity_sentences({}, spreads={"same": 0.0001, "apart": apart}, distinct={"same": (1, 3)})
    assert "have not separated" in text.splitlines()[0] and "have not separated" not in text.splitlines()[1]
    assert text.splitlines()[2] == ("- **same**'s component menu lists 1 of its 3 components; the other 2 decode "
                                    "within 1% of a listed one.")
    assert explore.distinct_components(same) == [0]
    with pytest.raises(CxrnbError, match="no mixture prior"):
        explore.component_spread(NoEncoder())


def test_bad_input_errors(toy, images):
    with pytest.raises(CxrnbError, match="no encoder"):
        explore.principal_directions(NoEncoder(), images)
    with pytest.raises(CxrnbError, match="k=50"):
        explore.principal_directions(toy, images, k=50, progress=False)
    with pytest.raises(CxrnbError, match="uint8"):
        explore.principal_directions(toy, images.float(), progress=False)
    with pytest.raises(CxrnbError, match="'cubic'"):
        explore.interpolate(toy, images[0], images[1], method="cubic")
    with pytest.raises(CxrnbError, match="has 3 mixture components"):
        explore.component_samples(toy, component=3)
    with pytest.raises(CxrnbError, match="no mixture"):
        explore.component_samples(NoEncoder(), component=0)
    with pytest.raises(CxrnbError, match="k=9"):
        explore.random_directions(D, k=9)


def test_conditional_model_needs_labels(toy):
    cond = Toy()
    cond.conditional = True
    with pytest.raises(CxrnbError, match="pass y"):
        explore.decode_grid(cond, torch.zeros(2, D))
    grid = explore.decode_grid(cond, torch.zeros(2, D), y=torch.zeros(15))
    assert grid.shape == (2 + S + 2, 2 + 2 * (S + 2))


@pytest.mark.parametrize("preset, k", [("GMVAE-V8", 300), ("FS-GMVAE-V3", 50), ("VAE-beta1", 0), ("LSGAN", 0)])
def test_the_real_presets_expose_their_mixture_components(preset, k):
    """The toy above declares n_components itself; the paper's models must too, or the explorer
    silently loses its component picker and notebook 05 draws an empty per-component figure."""
    model = build(preset, image_size=64, **({"weights": None} if preset.endswith(("V8", "V3")) else {}))
    assert model.n_components == k
    if k:
        y = torch.zeros(len(LABELS)) if model.conditional else None
        drawn = explore.component_samples(model, k - 1, n=2, seed=0, y=y)
        assert drawn.shape == (2, 1, 64, 64)


def test_images_of_another_size_are_refused(toy, images):
    with pytest.raises(CxrnbError, match=f"takes {S} px images, got 32x32"):
        explore.principal_directions(toy, torch.zeros(4, 1, 32, 32, dtype=torch.uint8), progress=False)


@pytest.mark.slow
def test_notebook_05_walks_each_model_on_its_own_images(phantom_root, tmp_path, monkeypatch, one_thread):
    """Notebook 05's calls on a VAE at 32 px and a GMVAE and a Dirichlet VAE at 64 px (the paper
    profile's VAE and GMVAE differ so): every encoder sees images of its own size only."""
    from cxrnb import study

    settings = dict(max_images=32, batch_size=16, device="cpu", runs_dir=tmp_path, progress=False,
                    config={"max_steps": 2})
    vae = study.train_run("VAE-elbo-beta1", str(phantom_root), image_size=32, **settings)
    gmvae = study.train_run("GMVAE-elbo", str(phantom_root), image_size=64, weights=None, **settings)
    dirvae = study.train_run("DirVAE-elbo", str(phantom_root), image_size=64, **settings)
    seen = {}
    for run in (vae, gmvae, dirvae):
        def spy(x, encode=run.model.encode, name=run.preset):
            seen.setdefault(name, set()).add(tuple(x.shape[-2:]))
            return encode(x)
        monkeypatch.setattr(run.model, "encode", spy)

    walks = {run.preset: explore.walk(run, k=2, progress=False) for run in (vae, gmvae, dirvae)}
    test = vae.cache.split_images("test")
    pair = explore.interpolate(vae.model, test[0], test[1], n=3, method="slerp")
    rows = explore.component_samples(gmvae.model, 0, n=2, y=walks["GMVAE-elbo"].y)
    explore.component_spread(gmvae.model, walks["GMVAE-elbo"].y)
    assert seen == {"VAE-elbo-beta1": {(32, 32)}, "GMVAE-elbo": {(64, 64)}, "DirVAE-elbo": {(64, 64)}}
    assert pair.shape == (3, 1, 32, 32) and rows.shape == (2, 1, 64, 64)
    for run in (vae, gmvae, dirvae):
        w, size = walks[run.preset], run.model.input_spec.size
        columns = len(explore.SHARES) if w.on_simplex else len(explore.STEPS)
        assert len(w.moves) == 2 and w.grid.shape == (2 + 2 * (size + 2), 2 + columns * (size + 2))
        assert widgets.walk_widget(w).image.value                               # the sliders draw
    with pytest.raises(CxrnbError, match="GMVAE-elbo takes 64 px images, got 32x32"):
        explore.principal_directions(gmvae.model, vae.cache.split_images("train"), k=2, progress=False)
    # the axes come from at most n_images training images: a seeded subset, in cache order
    train = vae.cache.split_images("train")
    some = explore.walk_images(vae, n=5, seed=1)
    rows = [next(i for i in range(len(train)) if torch.equal(train[i], x)) for x in some]
    assert len(some) == 5 and rows == sorted(rows) and torch.equal(some, explore.walk_images(vae, n=5, seed=1))
    assert not torch.equal(some, explore.walk_images(vae, n=5, seed=2))
    assert torch.equal(explore.walk_images(vae, n=len(train)), train)
    encoded = []
    means = explore.encode_means
    monkeypatch.setattr(explore, "encode_means", lambda m, x, p=True: encoded.append(len(x)) or means(m, x, p))
    explore.walk(vae, k=2, progress=False, n_images=5)
    assert encoded == [5]
