"""Least-Squares GAN (Mao et al.), the paper's Figure 7: a DCGAN-shaped generator and discriminator.

At the paper's 128 px the layers are exactly Figure 7 and the counts exactly Table 5
(generator 3,606,976, discriminator 2,795,904). Other image sizes adapt the generator only:

* its first layer, ConvT(100 -> 512, k, s1, p0), turns the 1x1 latent into a k x k map; k = 4 for
  sizes 4 * 2^n (64, 128, 256) and k = 7 for sizes 7 * 2^n (112, 224, 448), because the k4 s2 p1
  blocks can only double (from 4: 128 -> 256, never 224; from 7: 7, 14, 28, 56, 112, 224);
* then log2(size / k) doublings, each a k4 s2 p1 ConvT narrowing 512, 256, ... and the last one to
  1 channel (5 doublings at 128 and 224; 4 at 64, where the 32-wide block is dropped).
  Generator sizes: 3,574,656 at 64 px, 5,296,576 at 224 px (the 7 x 7 first layer).

The discriminator is fully convolutional and identical at every size: its last k4 s2 p1 conv leaves a
map of floor(size / 64) per side (2x2 at 128, as in the paper; 1x1 at 64; 3x3 at 224), and the
least-squares losses average over that map.

``conditional=True`` (preset ``LSGAN-cond``, ours, not the paper's) conditions both networks on the
15-value multi-hot label y of cxrnb.labels.LABELS, so that the usefulness experiment (notebook 07) can
ask the GAN family, not only the FS-GMVAE, for images of given findings:

* the generator reads concat(z, y) as a (100 + 15) x 1 x 1 input (its first ConvT gains 15 input
  channels, 122,880 weights at 64 and 128 px);
* the discriminator is a projection discriminator (Miyato & Koyama 2018) for multi-hot labels:
  score = D_map(x) + <embed(y), h(x)>, where h(x) is the last hidden layer's 512 channels averaged
  over space and embed a bias-free Linear(15 -> 512) (7,680 weights). For one-hot y this is Miyato's
  class embedding; for several findings it adds their embeddings. Bias-free, an all-zero y adds
  nothing; it never occurs in CXR14, where "No Finding" is a label of its own. The projection is
  added to every cell of D_map's map. Averaging (not Miyato's sum) keeps its scale the same at every
  image size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, adam

Z_DIM = 100
SIZES = tuple(sorted(k * 2 ** n for k in (4, 7) for n in (4, 5, 6)))   # 64, 112, 128, 224, 256, 448


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


def _down(c_in: int, c_out: int, bn: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), *([nn.BatchNorm2d(c_out)] if bn else []),
            nn.LeakyReLU(0.2, True)]


class Generator(nn.Sequential):
    """z (100 x 1 x 1) -> 1 x size x size in [-1, 1]; all layers bias-free, as in Figure 7."""

    def __init__(self, size: int = 128, z_dim: int = Z_DIM):
        first = 7 if size % 7 == 0 else 4              # sizes are k * 2^n (checked by LSGAN)
        doublings = (size // first).bit_length() - 1   # log2(size / k)
        widths = [512 >> i for i in range(doublings)]  # 512, 256, ... : one per doubling
        layers = [nn.ConvTranspose2d(z_dim, 512, first, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += _up(c_in, c_out)
        layers += [nn.ConvTranspose2d(widths[-1], 1, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__(*layers)


class Discriminator(nn.Sequential):
    """1 x size x size -> a map of real/fake scores (no sigmoid: least-squares targets 1 and 0)."""

    def __init__(self):
        super().__init__(*_down(1, 32, bn=False), *_down(32, 64), *_down(64, 128), *_down(128, 256),
                         *_down(256, 512), nn.Conv2d(512, 1, 4, 2, 1, bias=False))

    def hidden(self, x: Tensor) -> Tensor:
        """The last hidden layer's features (B, 512, s, s), before the scoring conv ``self[-1]``."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


class ProjectionDiscriminator(nn.Module):
    """``Discriminator`` plus the projection of the labels onto its last hidden features (module doc)."""

    def __init__(self, n_labels: int = len(LABELS)):
        super().__init__()
        self.body = Discriminator()
        self.embed = nn.Linear(n_labels, 512, bias=False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.body.hidden(x)
        projection = (self.embed(y) * h.mean((2, 3))).sum(1)    # <embed(y), pooled h>, one per image
        return self.body[-1](h) + projection[:, None, None, None]


def dcgan_init(m: nn.Module) -> None:
    """Weight initialisation of pytorch/examples dcgan: conv N(0, 0.02), BatchNorm N(1, 0.02), bias 0
    (the conditional D's label embedding too, so its projection starts as small as D's scores)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class LSGAN(GenerativeModel):
    """The paper's GAN: least-squares losses, the generator stepping ``g_steps`` times per D step;
    ``conditional=True`` conditions G and D on the labels (module doc)."""

    family = Family.GAN
    latent_dim = Z_DIM
    counted_parts = {"generator": "G", "discriminator": "D"}

    def __init__(self, image_size: int = 128, g_steps: int = 3, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), conditional: bool = False):
        super().__init__()
        if image_size not in SIZES:
            raise CxrnbError(f"the LSGAN cannot produce {image_size} px images; valid sizes: "
                             f"{', '.join(map(str, SIZES))}")
        self.input_spec = InputSpec(size=image_size, channels=1, value_range="tanh")
        self.schedule = ((Part.D, 1), (Part.G, g_steps))
        self.lr, self.betas = lr, betas
        self.conditional = conditional
        n_labels = len(LABELS) if conditional else 0
        self.G = Generator(image_size, Z_DIM + n_labels)
        self.D = ProjectionDiscriminator(n_labels) if conditional else Discriminator()
        self.apply(dcgan_init)

    def optimizer(self, part: Part, fused: bool = True) -> torch.optim.Optimizer:
        net = {Part.D: self.D, Part.G: self.G}[part]
        return adam(net.parameters(), fused, lr=self.lr, betas=self.betas)

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's map of real/fake scores; the conditional D also reads the labels."""
        return (self.D(x, y) if self.conditional else self.D(x)).float()

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.D) -> dict[str, Tensor]:
        """Fakes are drawn for the batch's own labels, so G learns real label co-occurrence."""
        z = self.gaussian(x.shape[0], Z_DIM)
        y = self.condition(y, len(x))
        if part == Part.D:
            with torch.no_grad():                       # D's step needs no graph through G
                fake = self.decode(z, y)
            d_real, d_fake = self.score(x, y), self.score(fake, y)
            loss = 0.5 * (d_real - 1).pow(2).mean() + 0.5 * d_fake.pow(2).mean()
            return {"loss": loss, "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        self.D.requires_grad_(False)                    # G's step computes no gradients for D's weights
        try:
            d_fake = self.score(self.decode(z, y), y)
        finally:
            self.D.requires_grad_(True)                 # the graph is recorded: backward still skips D
        return {"loss": 0.5 * (d_fake - 1).pow(2).mean(), "d_fake": d_fake.mean().detach()}

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        z = z.reshape(z.shape[0], Z_DIM, 1, 1)
        y = self.condition(y, len(z))
        return self.G(z if y is None else torch.cat([z, y.to(z.dtype).reshape(len(z), -1, 1, 1)], 1))
