"""A toy linear model for the latent explorer's tests: small enough to check every image by hand."""

import numpy as np
import torch
from torch import nn

from cxrnb.models.base import GenerativeModel, InputSpec

D, S = 8, 16


class Toy(GenerativeModel):
    """A linear encoder/decoder (z=8 <-> 16x16) with a 3-component mixture prior."""

    family = "gmvae"
    input_spec = InputSpec(size=S, channels=1, value_range="unit")
    latent_dim = D
    n_components = 3
    has_encoder = True

    def __init__(self, latent_shape=(D,)):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.dec = nn.Linear(S * S, D), nn.Linear(D, S * S)
        self.register_buffer("means", 3 * torch.randn(3, D))
        self.latent_shape = latent_shape

    def encode(self, x):
        return self.enc(x.flatten(1)), torch.zeros(len(x), D)

    def sample_latent(self, n, generator=None, component=None):
        k = torch.randint(3, (n,), generator=generator) if component is None else torch.full((n,), component)
        return (self.means[k] + torch.randn(n, D, generator=generator)).view(n, *self.latent_shape)

    def decode(self, z, y=None):
        assert z.shape[1:] == self.latent_shape          # the explorer restores the model's latent shape
        return torch.sigmoid(self.dec(z.flatten(1))).view(-1, 1, S, S)


class NoEncoder(GenerativeModel):
    """A GAN-like toy: prior latents shaped (n, D, 1, 1), no encoder, no mixture."""

    latent_dim = D

    def __init__(self):
        super().__init__()
        self.toy = Toy(latent_shape=(D, 1, 1))

    def sample_latent(self, n, generator=None):
        return torch.randn(n, D, 1, 1, generator=generator)

    def decode(self, z, y=None):
        return self.toy.decode(z) * 2 - 1                 # tanh range, as the LSGAN


def decode_by_hand(model, z):
    w, b = model.dec.weight.detach().numpy(), model.dec.bias.detach().numpy()
    return 1 / (1 + np.exp(-(np.asarray(z, dtype=np.float64) @ w.T + b)))
