"""Post-hoc labelling (models/posthoc.py): the candidate kept for each label row is the one a hand
computation of the Bernoulli log-likelihood picks; without labels the base model's own samples come
out; the same seed gives the same images; and the refusals."""

import math

import pytest
import torch
from torch import nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS, LABELS
from cxrnb.models.base import GenerativeModel, InputSpec
from cxrnb.models.posthoc import PosthocLabelled, label_fit

S = 4


class Grey(GenerativeModel):
    """An unconditional toy: latent t in [0, 1) -> a flat image of grey level t."""

    family = "vae"
    input_spec = InputSpec(size=S, channels=1, value_range="unit")
    latent_dim = 1

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def sample_latent(self, n, generator=None):
        return torch.rand(n, 1, generator=generator)

    def decode(self, z, y=None):
        return z.view(-1, 1, 1, 1).expand(-1, 1, S, S)


def brightness_labeller(x):
    """Finding 0 is seen with probability = the grey level, finding 1 with 1 - grey, the rest 0.1."""
    g = x.mean((1, 2, 3))
    p = torch.full((len(x), len(FINDINGS)), 0.1)
    p[:, 0], p[:, 1] = g, 1 - g
    return p


def test_label_fit_is_the_bernoulli_log_likelihood_by_hand():
    y = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[[0.9, 0.2], [0.3, 0.6]]])
    hand = [math.log(0.9) + math.log(0.8), math.log(0.3) + math.log(0.4)]
    assert torch.allclose(label_fit(y, p), torch.tensor([hand]), atol=1e-6)


def test_each_row_gets_the_candidate_the_hand_computation_picks():
    model = PosthocLabelled(Grey(), brightness_labeller, pool=8)
    g = torch.Generator().manual_seed(0)
    z = model.sample_latent(3, g)
    assert z.shape == (3, 8, 1)
    y = torch.zeros(3, len(LABELS))
    y[0, 0] = 1           # wants finding 0: the brightest candidate
    y[1, 1] = 1           # wants finding 1: the darkest
    out = model.generate(z, y)
    levels = out[:, 0, 0, 0]                      # a flat image: its grey level
    assert levels[0] == z[0].max() and levels[1] == z[1].min()
    # row 2 wants neither: by hand, the candidate maximising log(1 - g) + log(g), the one nearest 0.5
    t = z[2, :, 0]
    hand = (torch.log1p(-t.clamp(1e-6, 1 - 1e-6)) + torch.log(t.clamp(1e-6, 1 - 1e-6))).argmax()
    assert levels[2] == t[hand]


def test_without_labels_the_base_samples_come_out_and_a_seed_repeats():
    base, model = Grey(), PosthocLabelled(Grey(), brightness_labeller, pool=4)
    z = model.sample_latent(5, torch.Generator().manual_seed(1))
    plain = base.sample_latent(20, torch.Generator().manual_seed(1)).view(5, 4, 1)
    assert torch.equal(z, plain)
    assert torch.equal(model.generate(z)[:, 0, 0, 0], z[:, 0, 0])
    y = torch.zeros(len(LABELS))
    y[0] = 1
    again = model.generate(model.sample_latent(5, torch.Generator().manual_seed(1)), y)
    assert torch.equal(model.generate(z, y), again)


def test_refusals_are_one_line_errors():
    class Cond(Grey):
        conditional = True

    with pytest.raises(CxrnbError, match="already conditional"):
        PosthocLabelled(Cond(), brightness_labeller)
    with pytest.raises(CxrnbError, match="pool must be"):
        PosthocLabelled(Grey(), brightness_labeller, pool=0)
    model = PosthocLabelled(Grey(), brightness_labeller)
    with pytest.raises(CxrnbError, match="is conditional: give labels"):
        model.condition(None, 2)
    with pytest.raises(CxrnbError, match="call generate"):
        model.decode(torch.zeros(1, 1))


def test_a_post_hoc_run_has_no_family_in_the_ranking():
    """scoring.families: the base model keeps its family, its post-hoc selection gets none, so the
    family order and the targets never take a labeller's pick for a model's own samples."""
    from types import SimpleNamespace

    from cxrnb.study.scoring import families

    base = Grey()
    runs = {"Grey": SimpleNamespace(model=base),
            "Grey · labelled post hoc": SimpleNamespace(model=PosthocLabelled(base, brightness_labeller))}
    assert families(runs) == {"Grey": "vae", "Grey · labelled post hoc": None}
