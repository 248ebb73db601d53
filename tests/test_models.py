"""Models against the paper's numbers (Tables 2-5, Figure 7), hand computations and torch.distributions.

Every model is built with weights=None or a stand-in weights file in a temporary hub directory:
no test looks for downloaded weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models import PRESETS, build
from cxrnb.models.gan import LSGAN
from cxrnb.models.gmvae import GMVAE, log_normal, log_normal_mixture
from cxrnb.models.vae import VAE, kl_standard_normal

# Table 4 of the paper, copied literally: Z, K, transition net, normalize, encoder, decoder.
TABLE_4 = {
    "FS-GMVAE-V1": (1000, 50, True, True, "VGG16", "Linear Layers"),
    "FS-GMVAE-V2": (1000, 50, True, False, "VGG16", "Linear Layers"),
    "FS-GMVAE-V3": (1000, 50, True, True, "VGG16", "Decoder 1"),
    "GMVAE-V3": (1000, 50, False, True, "VGG16", "Decoder 1"),
    "GMVAE-V4": (1000, 50, True, True, "VGG16", "Decoder 1"),
    "GMVAE-V5": (1000, 50, False, True, "VGG16", "Decoder 2"),
    "GMVAE-V6": (2000, 300, True, True, "DenseNet121", "Decoder 2"),
    "GMVAE-V7": (2000, 300, False, False, "VGG16", "Decoder 2"),
    "GMVAE-V8": (2000, 300, True, True, "VGG16", "Decoder 2"),
}
VGG16_FEATURES = 14_714_688                       # paper Table 5
DENSENET121_FEATURES = 7_978_856 - (1024 * 1000 + 1000)   # torchvision's documented size minus classifier
DECODER_WEIGHTS = {"Linear Layers": 0,            # no ConvT layers
                   "Decoder 1": 4*4*14*6 + 4*4*6*3 + 4*4*3*3 + 4*4*3*3,           # Table 2: 1,920
                   "Decoder 2": 4*4*128*64 + 4*4*64*32 + 4*4*32*16 + 4*4*16*3}    # Table 3: 172,800


def u8_batch(size: int, n: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def labels(n: int = 2) -> torch.Tensor:
    y = torch.zeros(n, len(LABELS))
    y[0, 0] = y[0, 2] = y[-1, -1] = 1
    return y


# --- LSGAN ------------------------------------------------------------------------------------------

def test_lsgan_parameter_counts_are_table_5():
    assert build("LSGAN").param_counts() == {"generator": 3_606_976, "discriminator": 2_795_904,
                                             "total": 6_402_880}


@pytest.mark.parametrize("size, d_map", [(64, 1), (128, 2), (224, 3)])
def test_lsgan_shapes_per_size(size, d_map):
    model = LSGAN(size).eval()
    z = model.sample_latent(2)
    images = model.decode(z)
    assert z.shape == (2, 100) and images.shape == (2, 1, size, size)
    assert images.min() >= -1 and images.max() <= 1                    # tanh output
    assert model.D(images).shape == (2, 1, d_map, d_map)
    assert model.generate(z).shape == (2, 1, size, size)


def test_lsgan_rejects_sizes_it_cannot_produce():
    with pytest.raises(CxrnbError, match="valid sizes: 64, 112, 128, 224, 256, 448"):
        LSGAN(100)


class _Const(nn.Module):
    """A stand-in generator that always returns ``images`` (plus 0 * z so z stays in the graph)."""

    def __init__(self, images):
        super().__init__()
        self.images = nn.Parameter(images)

    def forward(self, z):
        return self.images + 0 * z.sum()


class _TopLeft(nn.Module):
    """A stand-in discriminator whose score is the top-left pixel: scores are chosen by the inputs."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * x[:, :, :1, :1]


def test_lsgan_losses_equal_hand_computation():
    model = LSGAN(64)
    real, fake = torch.zeros(2, 1, 64, 64), torch.zeros(2, 1, 64, 64)
    real[:, 0, 0, 0] = torch.tensor([0.5, -0.5])         # D(x)    = 0.5, -0.5
    fake[:, 0, 0, 0] = torch.tensor([0.2, 1.0])          # D(G(z)) = 0.2,  1.0
    model.G, model.D = _Const(fake), _TopLeft()
    # D: 1/2 mean((D(x) - 1)^2) + 1/2 mean(D(G(z))^2) = 1/2 (0.25 + 2.25)/2 + 1/2 (0.04 + 1)/2
    assert model.loss(real, None, "d")["loss"].item() == pytest.approx(0.625 + 0.26)
    # G: 1/2 mean((D(G(z)) - 1)^2) = 1/2 (0.64 + 0)/2
    assert model.loss(real, None, "g")["loss"].item() == pytest.approx(0.16)


def test_lsgan_steps_compute_only_their_own_gradients():
    model, x = LSGAN(64), LSGAN(64).input_spec.to_model(u8_batch(64))
    model.loss(x, None, "g")["loss"].backward()
    assert all(p.grad is None for p in model.D.parameters())        # D frozen during G's step
    assert all(p.grad is not None for p in model.G.parameters())
    assert all(p.requires_grad for p in model.D.parameters())       # and unfrozen afterwards
    model.zero_grad(set_to_none=True)
    model.loss(x, None, "d")["loss"].backward()
    assert all(p.grad is None for p in model.G.parameters())        # fake batch made without a graph
    assert all(p.grad is not None for p in model.D.parameters())


def test_lsgan_schedule_optimisers_and_init_follow_the_paper():
    model = LSGAN(64)
    assert model.schedule == (("d", 1), ("g", 3)) and LSGAN(64, g_steps=1).schedule == (("d", 1), ("g", 1))
    for part, net in (("d", model.D), ("g", model.G)):
        opt = model.optimizer(part)
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}
    conv = model.G[0].weight                                        # 100*512*16 draws of N(0, 0.02)
    assert conv.mean().item() == pytest.approx(0, abs=1e-3) and conv.std().item() == pytest.approx(0.02, rel=0.02)


# --- VAE --------------------------------------------------------------------------------------------

def test_vae_parameter_counts_are_table_5():
    counts = build("VAE-beta1").param_counts()
    assert counts == {"encoder": 4_711_648, "mean": 8_389_632, "logvar": 8_389_632,
                      "decoder": 11_184_033, "total": 32_674_945}


def test_vae_shapes_at_64px():
    model = VAE(64).eval()
    x = model.input_spec.to_model(u8_batch(64))
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, 1024)
    recon = model.decode(mean)
    assert recon.shape == (2, 1, 64, 64) and 0 <= recon.min() and recon.max() <= 1     # sigmoid
    # at 64 px the flatten is 512 x 2 x 2 = 2048, so each head is Linear(2048 -> 1024)
    assert model.param_counts()["mean"] == 2048 * 1024 + 1024


def test_vae_kl_equals_hand_computation_and_torch_distributions():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # per dim 1/2 (sigma^2 + mu^2 - 1 - log sigma^2): 1/2 (1 + 1 - 1 - 0) + 1/2 (2 + 0 - 1 - log 2)
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (1 - math.log(2)))
    mu, logvar = torch.randn(4, 7), torch.randn(4, 7)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), reference)


def test_vae_loss_is_mse_plus_beta_kl():
    model = VAE(64, beta=0.0).eval()
    x = model.input_spec.to_model(u8_batch(64))
    torch.manual_seed(1)
    out = model.loss(x)
    mu, logvar = model.encode(x)
    torch.manual_seed(1)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    mse = ((model.decode(z) - x) ** 2).mean()
    assert out["loss"].item() == pytest.approx(mse.item(), rel=1e-5)
    model.beta = 0.1
    torch.manual_seed(1)
    out = model.loss(x)
    expected = mse.item() + 0.1 * kl_standard_normal(mu, logvar).mean().item()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_vae_optimiser_and_size_check():
    opt = VAE(64).optimizer("model")
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.999)
    with pytest.raises(CxrnbError, match="multiple of 32"):
        VAE(100)


# --- GMVAE ------------------------------------------------------------------------------------------

def test_encoder_parameter_counts():
    assert GMVAE(64, weights=None).param_counts()["encoder"] == VGG16_FEATURES
    assert GMVAE(64, encoder="densenet121", weights=None).param_counts()["encoder"] == DENSENET121_FEATURES


@pytest.mark.parametrize("decoder, table, widths", [("decoder1", "Decoder 1", (6, 3, 3, 3)),
                                                    ("decoder2", "Decoder 2", (64, 32, 16, 3))])
def test_decoders_match_tables_2_and_3(decoder, table, widths):
    model = GMVAE(224, decoder=decoder, weights=None).eval()
    assert model.param_counts()["decoder_weights"] == DECODER_WEIGHTS[table]     # 1,920 / 172,800
    shapes = []
    for m in model.decoder.modules():
        if isinstance(m, nn.ConvTranspose2d):
            m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    model.decode(model.sample_latent(1))
    assert shapes == [(1, c, s, s) for c, s in zip(widths, (28, 56, 112, 224))]   # activation volumes


def test_mixture_log_density_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, means, logvars = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    normals = Independent(Normal(means, (0.5 * logvars).exp()), 1)
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(3)), normals)
    torch.testing.assert_close(log_normal_mixture(z, means, logvars), mixture.log_prob(z))
    torch.testing.assert_close(log_normal(z, means[0], logvars[0]),
                               Independent(Normal(means[0], (0.5 * logvars[0]).exp()), 1).log_prob(z))


def test_gmvae_loss_is_mse_plus_monte_carlo_kl():
    model = build("FS-GMVAE-V3", image_size=64, weights=None, z_dim=8, k=3).eval()
    x, y = model.input_spec.to_model(u8_batch(64)), labels()
    torch.manual_seed(2)
    out = model.loss(x, y)
    mean, logvar = model.encode(x)
    torch.manual_seed(2)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    log_q = Independent(Normal(mean, (0.5 * logvar).exp()), 1).log_prob(z)
    prior = MixtureSameFamily(Categorical(logits=torch.zeros(3)),
                              Independent(Normal(model.prior_mean, (0.5 * model.prior_logvar).exp()), 1))
    kl = (log_q - prior.log_prob(z)).mean()
    mse = F.mse_loss(model.decode(z, y), x)
    assert out["kl"].item() == pytest.approx(kl.item(), abs=1e-5)      # a difference of two ~10s in float32
    assert out["loss"].item() == pytest.approx(mse.item() + kl.item(), rel=1e-5)


def test_sample_latent_mixture_and_fixed_component():
    model = GMVAE(64, z_dim=4, k=5, weights=None)
    a = model.sample_latent(6, torch.Generator().manual_seed(3))
    assert a.shape == (6, 4)
    torch.testing.assert_close(a, model.sample_latent(6, torch.Generator().manual_seed(3)))
    with torch.no_grad():
        model.prior_logvar.fill_(-30.0)                       # std 3e-7: draws sit on the means
    z = model.sample_latent(3, component=2)
    torch.testing.assert_close(z, model.prior_mean[2].expand(3, -1))
    with pytest.raises(CxrnbError, match="component must be in 0..4"):
        model.sample_latent(1, component=5)


def test_frozen_encoder_gets_no_gradients_and_keeps_imagenet_statistics():
    model = build("GMVAE-V6", image_size=64, weights=None, z_dim=8, k=3).train()
    bn = next(m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x = model.input_spec.to_model(u8_batch(64))
    model.loss(x, labels())["loss"].backward()
    assert not model.encoder.training and torch.equal(bn.running_mean, before)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert {id(p) for p in model.optimizer("model").param_groups[0]["params"]} == \
        {id(p) for n, p in model.named_parameters() if not n.startswith("encoder.")}
    trainable = build("GMVAE-V4", image_size=32, weights=None, z_dim=8, k=3, freeze_encoder=False)
    trainable.loss(trainable.input_spec.to_model(u8_batch(32)), labels())["loss"].backward()
    assert all(p.grad is not None for p in trainable.encoder.parameters())


def test_conditional_model_needs_labels():
    model = build("FS-GMVAE-V1", image_size=64, weights=None, z_dim=8, k=3)
    with pytest.raises(CxrnbError, match="conditional: give labels y"):
        model.decode(model.sample_latent(2))


def test_imagenet_weights_are_loaded_from_the_hub_cache_never_faked(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CxrnbError, match="vgg16-397923af.pth"):
        GMVAE(64, weights="imagenet")
    with pytest.warns(UserWarning, match="RANDOM"):
        assert not GMVAE(64, weights="auto").pretrained
    # A stand-in "ImageNet" DenseNet121 file in the cache is what weights="auto" loads.
    torch.manual_seed(4)
    stand_in = torchvision.models.densenet121()
    (tmp_path / "checkpoints").mkdir()
    torch.save(stand_in.state_dict(), tmp_path / "checkpoints" / "densenet121-a639ec97.pth")
    model = GMVAE(64, encoder="densenet121", weights="auto")
    assert model.pretrained
    torch.testing.assert_close(model.encoder[0].conv0.weight, stand_in.features.conv0.weight)


# --- presets ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TABLE_4))
def test_gmvae_presets_are_table_4(name):
    z, k, transition, normalize, encoder, decoder = TABLE_4[name]
    model = build(name, image_size=64, weights=None).eval()
    counts = model.param_counts()
    assert model.preset == name and model.conditional == name.startswith("FS-")
    assert model.latent_dim == z and model.prior_mean.shape == (k, z)
    assert isinstance(model.to_latent[0], nn.Conv2d) == transition
    assert model.input_spec.imagenet_norm == normalize and model.input_spec.channels == 3
    assert counts["encoder"] == {"VGG16": VGG16_FEATURES, "DenseNet121": DENSENET121_FEATURES}[encoder]
    assert counts["decoder_weights"] == DECODER_WEIGHTS[decoder]
    assert PRESETS[name].image_size == 224
    x, y = model.input_spec.to_model(u8_batch(64)), labels()
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, z)
    assert model.decode(mean, y).shape == (2, 3, 64, 64)
    out = model.loss(x, y)
    assert {"loss", "recon", "kl"} <= set(out) and all(torch.isfinite(v) for v in out.values())
    assert model.generate(model.sample_latent(2), y).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("name, family, beta", [("LSGAN", "gan", None), ("VAE-beta1", "vae", 1.0),
                                                ("VAE-beta0.1", "vae", 0.1), ("VAE-beta0.002", "vae", 0.002)])
def test_vae_and_gan_presets(name, family, beta):
    model = build(name, image_size=64)
    assert model.preset == name and model.family == family and PRESETS[name].image_size == 128
    assert model.input_spec.size == 64 and model.input_spec.channels == 1
    if beta is not None:
        assert model.beta == beta
    x = model.input_spec.to_model(u8_batch(64))
    for part, _ in model.schedule:
        assert torch.isfinite(model.loss(x, labels(), part)["loss"])
    images = model.generate(model.sample_latent(2))
    assert images.shape == (2, 1, 64, 64) and 0 <= images.min() and images.max() <= 1


def test_every_row_of_the_paper_has_a_preset():
    ours = {f"VAE-{r}-beta{b}" for r in ("upstream", "elbo") for b in ("1", "0.1", "0.002")}
    ours |= {"GMVAE-elbo", "FS-GMVAE-elbo", "DirVAE-elbo", "DDPM", "DDPM-cond", "LSGAN-cond",
             "LSGAN-DiffAug-EMA", "ACGAN", "DDPM-minsnr5", "DDPM-cfg"}
    assert set(PRESETS) == {"LSGAN", "VAE-beta1", "VAE-beta0.1", "VAE-beta0.002", *TABLE_4, *ours}
    assert all("not in the paper" in PRESETS[n].description for n in ours)
    assert build("LSGAN").input_spec.size == 128 and build("GMVAE-V8", weights=None).input_spec.size == 224


def test_build_rejects_unknown_names_and_settings():
    with pytest.raises(CxrnbError, match="did you mean 'GMVAE-V8'.*valid: LSGAN"):
        build("GMVAE-V9")
    with pytest.raises(CxrnbError, match="has no setting beta"):
        build("LSGAN", beta=1)
    with pytest.raises(CxrnbError, match="unknown encoder 'resnet50'"):
        build("GMVAE-V8", image_size=64, weights=None, encoder="resnet50")
    with pytest.raises(CxrnbError, match="weights must be"):
        build("GMVAE-V8", image_size=64, weights="download")


def test_random_vgg16_encoder_is_initialised_like_torchvisions_vgg():
    """make_layers alone keeps PyTorch's default init; torchvision's VGG16(weights=None) re-initialises
    every conv with Kaiming normal (fan_out, ReLU) and zero biases, and so must our random encoder."""
    torch.manual_seed(0)
    convs = [m for m in GMVAE(64, weights=None).encoder.modules() if isinstance(m, nn.Conv2d)]
    for conv in (convs[0], convs[-1]):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
        assert conv.bias.abs().max().item() == 0


def test_evaluating_is_eval_mode_without_gradients_then_the_mode_it_had():
    model = build("LSGAN", image_size=64).train()
    with model.evaluating():
        assert not model.training and not torch.is_grad_enabled()
    assert model.training and torch.is_grad_enabled()
    model.eval()
    with model.evaluating():
        pass
    assert not model.training
