"""The auxiliary-classifier GAN (ACGAN, ours): LSGAN-cond's generator, a discriminator that predicts
the 15 multi-hot labels, and the label loss both networks get."""

import math

import pytest
import torch
from torch import nn

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.models import PRESETS, build
from cxrnb.models.gan import LSGAN, AuxClassifierDiscriminator, label_loss


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_label_loss_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # -log sigmoid(l) for a positive, -log(1 - sigmoid(l)) = softplus(l) for a negative
    by_hand = (softplus(-0.0) + softplus(2.0) + softplus(-1.0) + softplus(-0.5)) / 4
    assert label_loss(logits, y).item() == pytest.approx(by_hand, rel=1e-6)


class FixedD(nn.Module):
    """Returns given (scores, logits), the real batch's at the first call of a D step, the fakes' after."""

    def __init__(self, outputs):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.outputs, self.calls = outputs, 0

    def forward(self, x):
        scores, logits = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return scores + 0 * self.dummy, logits + 0 * self.dummy


def acgan(outputs, **kwargs) -> LSGAN:
    model = LSGAN(64, conditional=True, label_head="classifier", **kwargs)
    model.D = FixedD(outputs)
    return model


Y = torch.zeros(2, 15)
Y[0, 0] = Y[1, LABELS.index("No Finding")] = 1
REAL_LOGITS = torch.zeros(2, 15)
REAL_LOGITS[0, 0], REAL_LOGITS[1, 1] = 2.0, -1.0            # a positive at +2, a negative at -1
REAL = (torch.tensor([0.5, 1.5]).view(2, 1, 1, 1), REAL_LOGITS)
FAKE = (torch.tensor([0.2, -0.2]).view(2, 1, 1, 1), torch.zeros(2, 15))
AC_REAL = (28 * math.log(2) + softplus(-2.0) + softplus(-1.0)) / 30     # mean over 2 x 15 labels
AC_FAKE = math.log(2)                                                   # every logit 0


@pytest.mark.parametrize("ac_fakes", [False, True])
def test_discriminator_loss_matches_a_hand_computation(ac_fakes):
    x = torch.zeros(2, 1, 64, 64)
    out = acgan([REAL, FAKE], ac_weight=0.5, ac_fakes=ac_fakes).loss(x, Y, "d")
    adversarial = 0.5 * (0.25 + 0.25) / 2 + 0.5 * (0.04 + 0.04) / 2      # 0.5 E(D(x)-1)^2 + 0.5 E D(G(z))^2
    expected = adversarial + 0.5 * (AC_REAL + (AC_FAKE if ac_fakes else 0))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["ac_real"].item() == pytest.approx(AC_REAL, rel=1e-6)
    assert out["ac_fake"].item() == pytest.approx(AC_FAKE, rel=1e-6)


def test_generator_loss_matches_a_hand_computation():
    out = acgan([FAKE], ac_weight=0.5).loss(torch.zeros(2, 1, 64, 64), Y, "g")
    adversarial = 0.5 * (0.8 ** 2 + 1.2 ** 2) / 2                        # 0.5 E(D(G(z)) - 1)^2
    assert out["loss"].item() == pytest.approx(adversarial + 0.5 * AC_FAKE, rel=1e-6)
    assert out["ac_fake"].item() == pytest.approx(AC_FAKE, rel=1e-6)


def test_the_real_model_loss_is_the_formula_on_its_outputs():
    """Without the stub: one D step's loss equals the formula on D's own outputs for the same z."""
    torch.manual_seed(0)
    model = build("ACGAN", image_size=64).eval()                          # eval: BatchNorm is deterministic
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 64, 64, generator=g) * 2 - 1, (torch.rand(3, 15, generator=g) < 0.3).float()
    torch.manual_seed(7)
    out = model.loss(x, y, "d")
    torch.manual_seed(7)
    z = torch.randn(3, 100)
    with torch.no_grad():
        fake = model.G(torch.cat([z, y], 1).view(3, -1, 1, 1))
        (s_real, c_real), (s_fake, c_fake) = model.D(x), model.D(fake)
    bce = nn.BCEWithLogitsLoss()
    expected = 0.5 * ((s_real - 1) ** 2).mean() + 0.5 * (s_fake ** 2).mean() + bce(c_real, y)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["ac_fake"].item() == pytest.approx(bce(c_fake, y).item(), rel=1e-5)


def test_each_network_gets_the_label_loss_through_its_own_step():
    torch.manual_seed(0)
    model = build("ACGAN", image_size=64)
    x, y = torch.rand(4, 1, 64, 64) * 2 - 1, (torch.rand(4, 15) < 0.3).float()
    model.loss(x, y, "d")["loss"].backward()
    assert model.D.classify.weight.grad.abs().sum() > 0                  # D's classifier learns
    assert all(p.grad is None for p in model.G.parameters())
    model.zero_grad(set_to_none=True)
    model.loss(x, y, "g")["ac_fake"].backward()                          # the label term alone
    assert all(p.grad is None for p in model.D.parameters())
    label_rows = model.G[0].weight.grad[100:]                            # G's first layer, label channels
    assert label_rows.abs().sum() > 0


def test_preset_structure_and_errors():
    p = PRESETS["ACGAN"]
    assert p.conditional and "not in the paper" in p.description
    model = build("ACGAN")
    cond = build("LSGAN-cond")
    assert isinstance(model.D, AuxClassifierDiscriminator) and model.G[0].in_channels == 100 + 15
    # LSGAN-cond's generator; D is the LSGAN's plus a Linear(512 -> 15) with bias
    assert model.param_counts()["generator"] == cond.param_counts()["generator"]
    assert model.param_counts()["discriminator"] == build("LSGAN").param_counts()["discriminator"] + 512 * 15 + 15
    x = torch.rand(2, 1, 128, 128)
    scores, logits = model.D(x)
    assert scores.shape == (2, 1, 2, 2) and logits.shape == (2, 15)
    assert torch.equal(model.score(x, torch.zeros(2, 15)), model.score(x, torch.ones(2, 15)))   # D reads no y
    with pytest.raises(CxrnbError, match="set conditional=True"):
        LSGAN(64, label_head="classifier")
    with pytest.raises(CxrnbError, match="label_head must be one of"):
        LSGAN(64, conditional=True, label_head="softmax")
