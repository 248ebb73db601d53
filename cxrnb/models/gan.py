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

``label_head="classifier"`` (preset ``ACGAN``, ours) conditions the discriminator the other way, as
the auxiliary-classifier GAN does (Odena et al. 2017): the same generator reads concat(z, y), but D
does not read y; it *predicts* it. Beside its real/fake map, a Linear(512 -> 15) on the same pooled
hidden features gives one logit per label, and both networks are trained on the multi-hot binary
cross-entropy of those logits (15 independent labels, not the paper's softmax over one class): D on
real images with their labels, G on its fakes for the labels it was given. The projection
discriminator only tells G that an image does not fit its label; the classifier's gradient says
which way the image must change to show it. The AC-GAN paper also trains D's classifier on the fakes
(``ac_fakes=True``); off by default, because then D also learns to read whatever label code G
invents, where trained on real images only it rewards G only for what real findings look like.

Two further options make the small-data recipe of preset ``LSGAN-DiffAug-EMA`` (ours): ``diffaugment``
passes every image D sees, real and fake, in both networks' steps, through DiffAugment
(diffaugment.py); ``ema_decay`` keeps an exponential moving average of G's weights (ema.py), which
``decode`` then samples from. Neither changes the losses, the schedule or the parameter counts.
"""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models.base import Family, GenerativeModel, InputSpec, Part, adam
from cxrnb.models.diffaugment import DiffAugment
from cxrnb.models.ema import EMA

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


class AuxClassifierDiscriminator(nn.Module):
    """``Discriminator`` plus a label classifier on its last hidden features pooled over space: returns
    (real/fake map, one logit per label) (module doc, AC-GAN)."""

    def __init__(self, n_labels: int = len(LABELS)):
        super().__init__()
        self.body = Discriminator()
        self.classify = nn.Linear(512, n_labels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body.hidden(x)
        return self.body[-1](h), self.classify(h.mean((2, 3)))


class LabelHead(StrEnum):
    """How a conditional discriminator uses the labels: reads them (projection) or predicts them."""

    PROJECTION = "projection"        # LSGAN-cond: Miyato & Koyama 2018
    CLASSIFIER = "classifier"        # ACGAN: Odena et al. 2017


def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """LSGAN's D loss with targets 1 (real) and 0 (fake): 0.5 E(D(x) - 1)^2 + 0.5 E D(G(z))^2."""
    return 0.5 * (d_real - 1).pow(2).mean() + 0.5 * d_fake.pow(2).mean()


def generator_loss(d_fake: Tensor) -> Tensor:
    """LSGAN's G loss, target 1 for its fakes: 0.5 E(D(G(z)) - 1)^2."""
    return 0.5 * (d_fake - 1).pow(2).mean()


def label_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The auxiliary classifier's loss: binary cross-entropy of each label's logit against the
    multi-hot y, averaged over labels and images."""
    return F.binary_cross_entropy_with_logits(logits.float(), y.float())


def dcgan_init(m: nn.Module) -> None:
    """Weight initialisation of pytorch/examples dcgan: conv N(0, 0.02), BatchNorm N(1, 0.02), bias 0
    (the conditional D's label embedding and classifier too, so they start as small as D's scores)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class LSGAN(GenerativeModel):
    """The paper's GAN: least-squares losses, the generator stepping ``g_steps`` times per D step;
    ``conditional=True`` conditions G and D on the labels, D by ``label_head``; ``diffaugment`` and
    ``ema_decay`` are the small-data recipe (module doc)."""

    family = Family.GAN
    latent_dim = Z_DIM
    counted_parts = {"generator": "G", "discriminator": "D"}

    def __init__(self, image_size: int = 128, g_steps: int = 3, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), conditional: bool = False,
                 label_head: str = LabelHead.PROJECTION, ac_weight: float = 1.0, ac_fakes: bool = False,
                 diffaugment: bool = False, ema_decay: float | None = None):
        super().__init__()
        if image_size not in SIZES:
            raise CxrnbError(f"the LSGAN cannot produce {image_size} px images; valid sizes: "
                             f"{', '.join(map(str, SIZES))}")
        if label_head not in set(LabelHead):
            raise CxrnbError(f"label_head must be one of {', '.join(LabelHead)} (got {label_head!r})")
        if label_head == LabelHead.CLASSIFIER and not conditional:
            raise CxrnbError("label_head='classifier' predicts the labels of a conditional GAN: "
                             "set conditional=True")
        if ema_decay is not None and not 0 <= ema_decay < 1:
            raise CxrnbError(f"ema_decay must be in [0, 1) or None (got {ema_decay})")
        self.input_spec = InputSpec(size=image_size, channels=1, value_range="tanh")
        self.schedule = ((Part.D, 1), (Part.G, g_steps))
        self.lr, self.betas = lr, betas
        self.conditional = conditional
        self.label_head = LabelHead(label_head) if conditional else None
        self.ac_weight, self.ac_fakes = ac_weight, ac_fakes
        self.augment = DiffAugment() if diffaugment else None
        n_labels = len(LABELS) if conditional else 0
        self.G = Generator(image_size, Z_DIM + n_labels)
        self.D = {None: Discriminator, LabelHead.PROJECTION: lambda: ProjectionDiscriminator(n_labels),
                  LabelHead.CLASSIFIER: lambda: AuxClassifierDiscriminator(n_labels)}[self.label_head]()
        self.apply(dcgan_init)
        self.G_ema = EMA(self.G, ema_decay) if ema_decay is not None else None

    def optimizer(self, part: Part, fused: bool = True) -> torch.optim.Optimizer:
        net = {Part.D: self.D, Part.G: self.G}[part]
        return adam(net.parameters(), fused, lr=self.lr, betas=self.betas)

    def judge(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """D's map of real/fake scores and, with the classifier head, its label logits (else None);
        the projection D also reads the labels. No augmentation: ``loss`` adds it."""
        if self.label_head == LabelHead.CLASSIFIER:
            scores, logits = self.D(x)
            return scores.float(), logits.float()
        return (self.D(x, y) if self.conditional else self.D(x)).float(), None

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's map of real/fake scores (``judge``'s first half)."""
        return self.judge(x, y)[0]

    def _seen(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``judge`` of the images as D sees them in training: through DiffAugment when it is on,
        with fresh parameters at every call."""
        return self.judge(self.augment(x) if self.augment is not None else x, y)

    def loss(self, x: Tensor, y: Tensor | None = None, part: Part = Part.D) -> dict[str, Tensor]:
        """Fakes are drawn for the batch's own labels, so G learns real label co-occurrence; G's steps
        use the trained generator, never its average."""
        z = self.gaussian(x.shape[0], Z_DIM)
        y = self.condition(y, len(x))
        if part == Part.D:
            with torch.no_grad():                       # D's step needs no graph through G
                fake = self._decode(self.G, z, y)
            (d_real, c_real), (d_fake, c_fake) = self._seen(x, y), self._seen(fake, y)
            out = {"loss": discriminator_loss(d_real, d_fake),
                   "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
            if c_real is not None:                      # AC-GAN: classify the real images (and the fakes)
                out["ac_real"] = label_loss(c_real, y)
                out["ac_fake"] = label_loss(c_fake, y)
                ac = out["ac_real"] + out["ac_fake"] if self.ac_fakes else out["ac_real"]
                out["loss"] = out["loss"] + self.ac_weight * ac
                out["ac_fake"] = out["ac_fake"].detach()
            return out
        self.D.requires_grad_(False)                    # G's step computes no gradients for D's weights
        try:
            d_fake, c_fake = self._seen(self._decode(self.G, z, y), y)
        finally:
            self.D.requires_grad_(True)                 # the graph is recorded: backward still skips D
        out = {"loss": generator_loss(d_fake), "d_fake": d_fake.mean().detach()}
        if c_fake is not None:                          # AC-GAN: fakes must show the labels they were given
            out["ac_fake"] = label_loss(c_fake, y)
            out["loss"] = out["loss"] + self.ac_weight * out["ac_fake"]
        return out

    def after_step(self, part: Part) -> None:
        """After each generator step, the weight average follows G."""
        if part == Part.G and self.G_ema is not None:
            self.G_ema.update(self.G)

    def _decode(self, net: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
        z = z.reshape(z.shape[0], Z_DIM, 1, 1)
        y = self.condition(y, len(z))
        return net(z if y is None else torch.cat([z, y.to(z.dtype).reshape(len(z), -1, 1, 1)], 1))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latents (and labels) -> images in [-1, 1], by the weight average when there is one."""
        return self._decode(self.G if self.G_ema is None else self.G_ema, z, y)
