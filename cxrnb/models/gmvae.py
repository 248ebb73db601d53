"""Gaussian-mixture VAE (Dilokthanakul et al.) and its label-conditioned FS-GMVAE: paper §4, §5.1, Table 4.

    x (3 x S x S) -> ImageNet encoder (VGG16 or DenseNet121 ``.features``)
      -> [transition net: Conv1x1(C -> 300) BatchNorm ReLU MaxPool] or flatten
      -> Linear -> mean, log-variance of q(z|x)
    z (, y) -> decoder ("linear", Table 2's "decoder1" or Table 3's "decoder2") -> 3 x S x S

The prior is a uniform mixture of K Gaussians with learned means and log-variances, so KL(q || p) has
no closed form; it is estimated from the one reparameterised sample, log q(z|x) - log p(z), with
log p(z) a log-sum-exp over the components (as in Dilokthanakul et al. and CS236 HW2's GMVAE).
FS-GMVAE concatenates the multi-hot label y (the 15 ``LABELS``) to z before decoding: it generates
the findings it is given. The encoder sees only x.

Choices the paper leaves open, stated here:

* Decoders 1 and 2 start from a (14 x 14) grid (size / 16 in general) of 14 or 128 channels; a
  Linear(z [+ 15] -> channels * grid^2) + ReLU makes that grid from z. Tables 2-3 list only the
  ConvT layers, and their counts (1,920 and 172,800) are the ConvT *weights*; ``param_counts``
  reports that number as "decoder_weights" beside the full decoder. ReLU between ConvTs.
* "Linear Layers" (FS V1-V2): Linear(z + 15 -> 512) ReLU Linear(512 -> S * S): one grey channel,
  copied to the 3 input channels (the input is a grey image copied to 3 channels too).
* Every decoder ends in a Sigmoid ([0, 1] image), then applies the ImageNet normalisation when the
  preset uses it, so reconstructions are compared (MSE, averaged over pixels) in the input space.
* Transition net: MaxPool2d(7) on VGG16's 7 x 7 map at 224 px is a global max; it is written as
  ``AdaptiveMaxPool2d(1)``, identical at 224 and defined at smaller sizes (2 x 2 at 64 px).
* "Encoder in Eval" (``freeze_encoder=True``, the default): ImageNet weights frozen and the encoder
  kept in eval mode (DenseNet's BatchNorm statistics stay ImageNet's). Table 4 does not say which
  variants froze it; Table 5 reports both.
* Without the ImageNet file a VGG16 encoder starts from torchvision's own random initialisation
  (Kaiming, as ``vgg16(weights=None)``), and a frozen random encoder is a fixed random projection.
  ``encoder="conv"`` (not in the paper) is the VAE's five-stage conv stack at half its width (16 to
  256 channels, a quarter of its FLOPs), trained from scratch: the stated deviation of the ``*-elbo``
  presets, for machines without ImageNet weights.
* Loss: ``reduction="paper"`` is the paper's pixel-mean MSE (in the input space, ImageNet-normalised
  when the preset is) plus the Monte-Carlo KL; ``"elbo"`` is the per-image ELBO of ``losses.py`` on the
  [0, 1] grey image (the three input channels are copies of it), so the likelihood is in pixels.

Image size: any multiple of 32 (the encoders downsample 32x); the paper's is 224.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models import vae
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, Prior, adam, count_params, imagenet_normalize
from cxrnb.models.losses import check_reduction, objective

ENCODERS = {"vgg16": (512, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
            "densenet121": (1024, torchvision.models.DenseNet121_Weights.IMAGENET1K_V1),
            "conv": (256, None)}          # the VAE's encoder at half width, trained from scratch
CONV_WIDTHS = (16, 32, 64, 128, 256)
DECONV_WIDTHS = {"decoder1": (14, 6, 3, 3, 3), "decoder2": (128, 64, 32, 16, 3)}   # Tables 2 and 3
DECODERS = ("linear", *DECONV_WIDTHS)
LINEAR_HIDDEN = 512
TRANSITION_CHANNELS = 300


def imagenet_file(encoder: str) -> Path:
    """Where torchvision keeps (and looks for) the encoder's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(ENCODERS[encoder][1].url).name


def backbone(encoder: str, weights: str | None) -> tuple[nn.Module, bool]:
    """The encoder's ``.features`` and whether ImageNet weights were loaded into it.

    weights: "imagenet" (required), "auto" (used when the file is in the torch hub cache, otherwise
    random weights and a warning), or None (random). Nothing is ever downloaded.
    """
    if encoder == "conv":
        return vae.encoder(3, CONV_WIDTHS)[:-1], False      # without its Flatten: a feature map
    path = imagenet_file(encoder)
    if weights == "imagenet" and not path.exists():
        raise CxrnbError(f"ImageNet weights for {encoder} not found: put {path.name} (from "
                         f"{ENCODERS[encoder][1].url}) in {path.parent}, or build with weights=None")
    pretrained = weights is not None and path.exists()
    if weights == "auto" and not pretrained:
        warnings.warn(f"no ImageNet weights for {encoder} at {path}: its encoder starts from RANDOM "
                      f"weights, unlike the paper's; put {path.name} there to use them", stacklevel=3)
    tv_weights = ENCODERS[encoder][1] if pretrained else None
    if encoder == "densenet121":        # torchvision's DenseNet applies this ReLU after .features
        return nn.Sequential(torchvision.models.densenet121(weights=tv_weights).features, nn.ReLU()), pretrained
    if pretrained:
        return torchvision.models.vgg16(weights=tv_weights).features, True
    # The same 13 conv layers, without building VGG16's 120M-parameter classifier only to drop it,
    # initialised as torchvision's VGG initialises them (make_layers alone keeps PyTorch's default,
    # whose outputs are ~10x smaller after 13 layers).
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features, False


def conv_decoder(widths: tuple[int, ...], in_dim: int, grid: int) -> nn.Sequential:
    """Linear -> widths[0] x grid x grid, then ConvT(k4 s2 p1) doublings through ``widths``."""
    layers: list[nn.Module] = [nn.Linear(in_dim, widths[0] * grid * grid), nn.ReLU(True),
                               nn.Unflatten(1, (widths[0], grid, grid))]
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.ReLU(True)]
    layers[-1] = nn.Sigmoid()                     # the last ConvT ends in [0, 1], not a ReLU
    return nn.Sequential(*layers)


def linear_decoder(in_dim: int, size: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, LINEAR_HIDDEN), nn.ReLU(True), nn.Linear(LINEAR_HIDDEN, size * size),
                         nn.Sigmoid(), nn.Unflatten(1, (1, size, size)))


def log_normal(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean).pow(2) / logvar.exp()).sum(-1)


def log_normal_mixture(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log of the uniform mixture (1/K) sum_k N(z; means[k], exp(logvars[k])); z (B, D), means (K, D).

    The squared distances expand as z^2/v - 2 z m/v + m^2/v, summed over D: two (B, D) x (D, K)
    matrix products instead of a (B, K, D) tensor (at B 64, K 300, D 2000 that tensor is 38M floats
    per operation, and the KL was the slowest part of a GMVAE step)."""
    with torch.autocast(z.device.type, enabled=False):         # bf16 products would cancel badly
        z, means, logvars = z.float(), means.float(), logvars.float()
        inv_var = (-logvars).exp()                                          # (K, D)
        sq = z.pow(2) @ inv_var.T - 2 * z @ (means * inv_var).T + (means.pow(2) * inv_var).sum(1)
    log_components = -0.5 * (z.shape[1] * math.log(2 * math.pi) + logvars.sum(1) + sq)   # (B, K)
    return torch.logsumexp(log_components, dim=1) - math.log(means.shape[0])


class GMVAE(GenerativeModel):
    """One row of Table 4: ``conditional=True`` makes it the FS-GMVAE."""

    family = Family.GMVAE
    prior = Prior.MIXTURE
    has_encoder = True
    counted_parts = {"encoder": "encoder", "to_latent": "to_latent", "decoder": "decoder"}

    def __init__(self, image_size: int = 224, z_dim: int = 1000, k: int = 50, transition: bool = True,
                 normalize: bool = True, encoder: str = "vgg16", decoder: str = "decoder1",
                 conditional: bool = False, freeze_encoder: bool = True, weights: str | None = "auto",
                 lr: float = 1e-4, reduction: str = "paper", beta: float = 1.0):
        super().__init__()
        if image_size % 32 or image_size < 32:
            raise CxrnbError(f"the GMVAE needs an image size that is a multiple of 32 (its encoders "
                             f"downsample 32x), e.g. 64 or 224; got {image_size}")
        if encoder not in ENCODERS:
            raise CxrnbError(f"unknown encoder {encoder!r}; valid: {', '.join(ENCODERS)}")
        if decoder not in DECODERS:
            raise CxrnbError(f"unknown decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        if weights not in ("auto", "imagenet", None):
            raise CxrnbError(f"weights must be 'auto', 'imagenet' or None; got {weights!r}")
        self.input_spec = InputSpec(size=image_size, channels=3, value_range="unit", imagenet_norm=normalize)
        self.latent_dim, self.conditional = z_dim, conditional
        self.freeze_encoder, self.lr = freeze_encoder, lr
        self.reduction, self.beta = check_reduction(reduction), beta

        self.encoder, self.pretrained = backbone(encoder, weights)
        if freeze_encoder:
            self.encoder.requires_grad_(False).eval()
        channels, grid = ENCODERS[encoder][0], image_size // 32
        if transition:
            self.to_latent = nn.Sequential(
                nn.Conv2d(channels, TRANSITION_CHANNELS, 1), nn.BatchNorm2d(TRANSITION_CHANNELS), nn.ReLU(True),
                nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(TRANSITION_CHANNELS, 2 * z_dim))
        else:
            self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, 2 * z_dim))

        in_dim = z_dim + (len(LABELS) if conditional else 0)
        self.decoder = (linear_decoder(in_dim, image_size) if decoder == "linear"
                        else conv_decoder(DECONV_WIDTHS[decoder], in_dim, image_size // 16))

        # The mixture prior: K learned Gaussians (means spread as in CS236 HW2, unit variances).
        self.prior_mean = nn.Parameter(torch.randn(k, z_dim) / math.sqrt(k * z_dim))
        self.prior_logvar = nn.Parameter(torch.zeros(k, z_dim))

    @property
    def n_components(self) -> int:
        """K, the mixture components of the prior (the latent explorer's component picker)."""
        return self.prior_mean.shape[0]

    def train(self, mode: bool = True) -> GMVAE:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()                    # "Encoder in Eval"
        return self

    def optimizer(self, part: Part = Part.MODEL, fused: bool = True) -> torch.optim.Optimizer:
        return adam([p for p in self.parameters() if p.requires_grad], fused, lr=self.lr)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            h = self.encoder(x)
        mean, logvar = self.to_latent(h).chunk(2, dim=1)
        return mean, logvar

    def decode_unit(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents (and labels) -> the decoder's own output, 1 or 3 channels in [0, 1]."""
        y = self.condition(y, len(z))
        return self.decoder(z if y is None else torch.cat([z, y.to(z.dtype)], dim=1))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        x = self.decode_unit(z, y).expand(-1, 3, -1, -1)  # the linear decoder's grey copied to 3
        return imagenet_normalize(x) if self.input_spec.imagenet_norm else x

    def posterior_kl(self, mean: Tensor, logvar: Tensor, z: Tensor | None = None) -> Tensor:
        """KL(q(z|x) || mixture prior) per image, estimated from one draw z of q (drawn if not given):
        log q(z|x) - log p(z). Unbiased, so it can come out negative for a single image."""
        if z is None:
            z = self.draw_posterior(mean, logvar)
        return log_normal(z, mean, logvar) - log_normal_mixture(z, self.prior_mean, self.prior_logvar)

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.MODEL) -> dict[str, Tensor]:
        mean, logvar = (t.float() for t in self.encode(x))
        z = self.draw_posterior(mean, logvar)
        kl = self.posterior_kl(mean, logvar, z)
        if self.reduction == "elbo":          # in pixels: the grey [0, 1] image against its decoding
            grey = self.decode_unit(z, y).float().mean(1, keepdim=True)
            return objective(grey, self.input_spec.to_unit(x.float()), kl, self.beta, "elbo")
        return objective(self.decode(z, y), x, kl, self.beta, self.reduction)

    @torch.no_grad()
    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      component: int | None = None) -> Tensor:
        """n draws from the mixture prior, or from its component ``component`` alone."""
        k = self.prior_mean.shape[0]
        if component is not None and not 0 <= component < k:
            raise CxrnbError(f"component must be in 0..{k - 1}; got {component}")
        device = self.draw_device(generator)
        which = (torch.randint(k, (n,), generator=generator, device=device) if component is None
                 else torch.full((n,), component, device=device)).to(self.device)
        eps = self.gaussian(n, self.latent_dim, generator=generator)
        return self.prior_mean[which] + (0.5 * self.prior_logvar[which]).exp() * eps

    def param_counts(self) -> dict[str, int]:
        count = super().param_counts()
        count.pop("total")                         # the parts' sum leaves out the prior: counted below
        count["decoder_weights"] = sum(m.weight.numel() for m in self.decoder.modules()
                                       if isinstance(m, nn.ConvTranspose2d))    # Table 5's "Decoder1/2"
        count["prior"] = self.prior_mean.numel() + self.prior_logvar.numel()
        count["total"] = count_params(self)
        return count
