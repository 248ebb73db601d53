"""The paper's VAE (§3.1, §5.2): VGG-style conv encoder, DCGAN-style transposed-conv decoder.

Figure 4 (the layer list) is missing from the paper, so these layers are a reconstruction. At 128 px
they reproduce every number of Table 5 exactly (tests pin them):

    encoder    4,711,648  five VGG stages [Conv3x3 ReLU Conv3x3 ReLU MaxPool2] with 32, 64, 128,
                          256, 512 channels, 1 x 128 x 128 -> 512 x 4 x 4 = 8192 features
    mean       8,389,632  Linear(8192 -> 1024)
    logvar     8,389,632  Linear(8192 -> 1024)
    decoder   11,184,033  Linear(1024 -> 8192) -> 512 x 4 x 4, four blocks [ConvT k4 s2 p1, BatchNorm,
                          ReLU] 512 -> 256 -> 128 -> 64 -> 32, ConvT(32 -> 1) k4 s2 p1, Sigmoid
    total     32,674,945

Why z = 1024: Table 5's "Mean and Logvar: 8,389,632" is the size of *each* head. Its total is
encoder + decoder + 2 x 8,389,632; read as both heads together (two Linear(8192 -> 512)), the parts
would sum to 24,285,313, not the 32,674,945 printed. Linear(8192 -> 1024) has exactly 8,389,632
parameters, and with z = 1024 the decoder above (plain PyTorch defaults: biases on, BatchNorm after
every hidden ConvT, the DCGAN generator's shape) lands on 11,184,033 exactly. The 8192-wide flatten is
512 x 4 x 4, so the paper's VAE ran at **128 px** (not the 224 of §4).

Other sizes: any multiple of 32. The flatten is then 512 x (size/32)^2 (2048 at 64 px, 25088 at
224), so the heads and the decoder's linear layer change size; the conv stacks do not.

Choices the paper leaves open: images in [0, 1] with a Sigmoid output. The loss is
``reconstruction + beta * KL`` reduced one of three ways (``reduction``, see ``losses.py``):
``paper`` (pixel-mean MSE + beta * KL summed over z, what §5.2 says and the paper's presets use),
``upstream`` (the authors' code: the KL also summed over the batch) or ``elbo`` (a per-image Gaussian
log-likelihood with calibrated sigma + KL, in nats). The first two weigh the KL so heavily against the
pixel-mean MSE that the posterior collapses to the prior; that is why the paper swept beta down to
0.002, and why its VAEs drew one blurred average chest.

The authors' code differs in two more places that we do not copy, because neither is in the paper:
a LeakyReLU after the mean and log-variance heads, and no output Sigmoid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, adam
from cxrnb.models.losses import check_reduction, objective

Z_DIM = 1024
WIDTHS = (32, 64, 128, 256, 512)


def encoder(channels: int = 1, widths: tuple[int, ...] = WIDTHS) -> nn.Sequential:
    """Five VGG stages, ``channels`` x S x S -> widths[-1] x S/32 x S/32, flattened."""
    layers, c_in = [], channels
    for c in widths:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(True),
                   nn.Conv2d(c, c, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten())


def decoder(grid: int, z_dim: int = Z_DIM) -> nn.Sequential:
    def up(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(True)]

    return nn.Sequential(
        nn.Linear(z_dim, 512 * grid * grid), nn.Unflatten(1, (512, grid, grid)),
        *up(512, 256), *up(256, 128), *up(128, 64), *up(64, 32),
        nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample: the paper's closed form, summed over dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


class VAE(GenerativeModel):
    """beta-VAE: loss = reconstruction + beta * KL(q(z|x) || N(0, I)), z drawn by reparameterisation.

    ``kl_warmup``: iterations over which the KL weight rises linearly from 0 to beta (0: none), a
    common guard against early posterior collapse; its counter lives in the state dict, so a resumed
    run continues the ramp.
    """

    family = Family.VAE
    latent_dim = Z_DIM
    has_encoder = True
    counted_parts = {"encoder": "encoder", "mean": "mean", "logvar": "logvar", "decoder": "decoder"}

    def __init__(self, image_size: int = 128, beta: float = 1.0, lr: float = 1e-4,
                 reduction: str = "paper", kl_warmup: int = 0):
        super().__init__()
        if image_size % 32 or image_size < 32:
            raise CxrnbError(f"the VAE needs an image size that is a multiple of 32 (five 2x poolings), "
                             f"e.g. 64, 128 or 224; got {image_size}")
        if not beta >= 0 or kl_warmup < 0:
            raise CxrnbError(f"beta and kl_warmup must be >= 0; got beta={beta}, kl_warmup={kl_warmup}")
        self.input_spec = InputSpec(size=image_size, channels=1, value_range="unit")
        self.beta, self.lr = beta, lr
        self.reduction, self.kl_warmup = check_reduction(reduction), kl_warmup
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        grid = image_size // 32
        self.encoder = encoder()
        self.mean = nn.Linear(512 * grid * grid, Z_DIM)
        self.logvar = nn.Linear(512 * grid * grid, Z_DIM)
        self.decoder = decoder(grid)

    def optimizer(self, part: Part = Part.MODEL, fused: bool = True) -> torch.optim.Optimizer:
        return adam(self.parameters(), fused, lr=self.lr)      # default betas, as the paper

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.mean(h), self.logvar(h)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def posterior_kl(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) per image, in closed form."""
        return kl_standard_normal(mu, logvar)

    def kl_weight(self) -> float:
        """beta, ramped up over the first ``kl_warmup`` training iterations."""
        if not self.kl_warmup:
            return self.beta
        return self.beta * min(1.0, (int(self.steps) + 1) / self.kl_warmup)

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.MODEL) -> dict[str, Tensor]:
        mu, logvar = (t.float() for t in self.encode(x))
        z = self.draw_posterior(mu, logvar)
        out = objective(self.decode(z), x, self.posterior_kl(mu, logvar), self.kl_weight(), self.reduction)
        if self.training:
            self.steps += 1
        return out

