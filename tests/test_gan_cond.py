"""The label-conditioned LSGAN (LSGAN-cond, ours): concat(z, y) into the generator, a projection
discriminator, and everything downstream that reads ``model.conditional``."""

import pytest
import torch

from cxrnb import labels, study
from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS, NO_FINDING
from cxrnb.models import PRESETS, build
from cxrnb.models.gan import LSGAN
from cxrnb.report import sentences
from cxrnb.study import explore, scoring, widgets


def one_hot(*names: str) -> torch.Tensor:
    return torch.stack([labels.one_hot(n) for n in names])


def batch(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    return x, (torch.rand(n, len(LABELS), generator=g) < 0.3).float()


@pytest.fixture(scope="module")
def cgan():
    torch.manual_seed(0)
    return LSGAN(64, conditional=True).eval()


def test_preset_and_parameter_counts():
    model = build("LSGAN-cond")
    assert model.conditional and model.family == "gan" and not build("LSGAN").conditional
    assert "not in the paper" in PRESETS["LSGAN-cond"].description
    assert model.G[0].in_channels == 100 + 15
    # the LSGAN's Table 5 counts plus the 15 label channels of G's first 4x4 ConvT and D's embedding
    assert model.param_counts() == {"generator": 3_606_976 + 15 * 512 * 16, "discriminator": 2_795_904 + 15 * 512,
                                    "total": 6_402_880 + 15 * 512 * 17}
    assert build("LSGAN").param_counts() == {"generator": 3_606_976, "discriminator": 2_795_904, "total": 6_402_880}
    assert model.D.embed.bias is None


def test_generator_shape_range_and_labels(cgan):
    z = cgan.sample_latent(3, torch.Generator().manual_seed(1))
    y = one_hot(NO_FINDING, "Cardiomegaly", "Effusion")
    images = cgan.decode(z, y)
    assert images.shape == (3, 1, 64, 64) and images.min() >= -1 and images.max() <= 1
    unit = cgan.generate(z, y)
    assert unit.min() >= 0 and unit.max() <= 1
    other = cgan.decode(z, one_hot("Effusion", "Effusion", "Effusion"))
    assert torch.equal(images[2], other[2])                                # same z, same label
    assert not torch.allclose(images[:2], other[:2])                       # same z, another label
    with pytest.raises(CxrnbError, match="conditional: give labels"):
        cgan.decode(z)


def test_projection_equals_a_hand_computation():
    model = LSGAN(64, conditional=True).eval()
    x, y = batch()
    D = model.D
    with torch.no_grad():
        D.embed.weight.normal_()                                           # far from its N(0, 0.02) init
        h = D.body.hidden(x)                                               # (4, 512, 2, 2) at 64 px
        pooled = h.mean((2, 3))
        by_hand = torch.tensor([sum(float(D.embed.weight[c] @ y[b]) * float(pooled[b, c]) for c in range(512))
                                for b in range(len(x))])
        unconditioned = D.body(x)                                          # D_map(x), the LSGAN's score
        assert torch.allclose((D(x, y) - unconditioned).flatten(), by_hand, atol=1e-4)
        assert torch.equal(D(x, torch.zeros_like(y)), unconditioned)      # bias-free: no label, no term
        assert torch.allclose(model.score(x, y), D(x, y))


def test_each_step_draws_fakes_for_the_batch_labels_and_trains_only_its_network(monkeypatch):
    model = LSGAN(64, conditional=True)
    x, y = batch()
    seen = []
    decode = model._decode                                               # what loss draws fakes with
    monkeypatch.setattr(model, "_decode", lambda net, z, labels: seen.append(labels) or decode(net, z, labels))
    model.loss(x, y, "g")["loss"].backward()
    assert all(p.grad is None for p in model.D.parameters())              # D (embedding too) frozen
    assert all(p.grad is not None for p in model.G.parameters())
    assert all(p.requires_grad for p in model.D.parameters())
    model.zero_grad(set_to_none=True)
    model.loss(x, y, "d")["loss"].backward()
    assert all(p.grad is None for p in model.G.parameters())              # no graph through G
    assert all(p.grad is not None for p in model.D.parameters())
    assert len(seen) == 2 and all(torch.equal(s, y) for s in seen)


def test_label_findings_sentence():
    base = torch.zeros(2, 1, 4, 4)
    base[1] = 0.5                                          # two latents differ by 0.5 everywhere
    rows = {NO_FINDING: base, "Cardiomegaly": base + 0.1, "Effusion": base + 0.05}
    text = sentences.label_findings(rows, "LSGAN-cond", 10, 1.5)
    assert "After 10 iterations (1.5 epochs)" in text and "by 0.075 of the grey range" in text
    assert "most for Cardiomegaly, 0.100, least for Effusion, 0.050" in text and "against 0.500" in text
    assert "conditioning is weak" in text                  # 0.075 < 0.5 / 4
    rows["Effusion"] = base + 0.3
    assert "the label visibly changes" in sentences.label_findings(rows, "LSGAN-cond", 10, 1.5)
    assert "ignores the label" in sentences.label_findings({NO_FINDING: base, "Mass": base}, "m", 1, 1)


@pytest.fixture(scope="module")
def cgan_run(phantom_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run = study.train_run("LSGAN-cond", str(phantom_root), image_size=64, max_images=32, batch_size=16,
                          epochs=2, device="cpu", runs_dir=runs, sample_at=[0], progress=False)
    return run, runs


def test_trains_on_the_phantom_and_reloads(cgan_run, phantom_root):
    run, runs = cgan_run
    c = study.curves(run)
    assert len(c) == 4 and torch.isfinite(torch.tensor(c[["d/loss", "g/loss"]].values)).all()
    again = study.load_run("LSGAN-cond", runs, str(phantom_root), device="cpu")
    assert again.model.conditional
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CxrnbError, match="no trained run of LSGAN "):     # LSGAN-cond-64px is not LSGAN's
        study.load_run("LSGAN", runs)


def test_downstream_uses_the_labels(cgan_run):
    run, _ = cgan_run
    y = torch.zeros(4, 15)
    y[:2, LABELS.index("Cardiomegaly")] = 1
    a = scoring.conditional_samples(run, y, size=64)
    b = scoring.conditional_samples(run, torch.zeros(4, 15), size=64)
    assert a.shape == (4, 1, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a[2:], b[2:]) and not torch.equal(a[:2], b[:2])    # same z, other labels
    rows = study.samples_per_label(run, n=3)
    assert list(rows) == [NO_FINDING, *LABELS[:-1]] and rows["Mass"].shape == (3, 1, 64, 64)
    assert not torch.equal(rows[NO_FINDING], rows["Mass"])
    text = scoring.describe_generator(run, n=8)
    assert text.startswith("LSGAN-cond, 2 epochs, 1 training seed, a GAN model: no encoder")
    assert "MS-SSIM of 8 samples" in text


def test_explorer_label_menu_redraws_the_image(cgan):
    mean, dirs, std = explore.random_directions(cgan.latent_dim, k=2)
    ui = widgets.explorer_widget(cgan, mean, dirs, std)
    assert ui.labels.value == NO_FINDING and list(ui.labels.options) == list(LABELS)
    first = ui.image.value
    ui.labels.value = "Cardiomegaly"
    assert ui.image.value != first
    ui.labels.value = NO_FINDING
    assert ui.image.value == first
    given = widgets.explorer_widget(cgan, mean, dirs, std, y=one_hot("Cardiomegaly")[0])
    assert given.labels.value == "labels given"
    assert widgets.explorer_widget(build("LSGAN", image_size=64), mean, dirs, std).labels is None


def test_missing_labels_and_missing_encoder_are_one_line_errors():
    x, _ = batch(2)
    with pytest.raises(CxrnbError, match="conditional: give labels y"):
        LSGAN(64, conditional=True).loss(x, None, "d")
    with pytest.raises(CxrnbError, match="LSGAN has no encoder"):
        LSGAN(64).encode(x)


def test_one_hot_label_rows():
    row = labels.one_hot("Cardiomegaly")
    assert row.shape == (15,) and row.sum() == 1 and row[1] == 1        # LABELS[1] is Cardiomegaly
    assert labels.one_hot(NO_FINDING)[-1] == 1
    with pytest.raises(CxrnbError, match="unknown label 'Covid'"):
        labels.one_hot("Covid")
