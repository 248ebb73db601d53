"""The small-data GAN recipe (LSGAN-DiffAug-EMA, ours): DiffAugment's translation and cutout, and the
EMA copy of the generator that samples."""

import math

import pytest
import torch
from torch import nn

from cxrnb.errors import CxrnbError
from cxrnb.models import PRESETS, build
from cxrnb.models.diffaugment import DiffAugment, Draw, cutout, translate
from cxrnb.models.ema import EMA
from cxrnb.models.gan import LSGAN

# --- the ops against a hand computation and against the official code ----------------------------


def test_translation_matches_a_hand_computation():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)          # rows 0-3, 4-7, 8-11, 12-15
    out = translate(x, torch.tensor([[1, -2]]))          # out[i, j] = x[i + 1, j - 2], 0 outside
    assert torch.equal(out[0, 0], torch.tensor([[0., 0., 4., 5.],
                                                [0., 0., 8., 9.],
                                                [0., 0., 12., 13.],
                                                [0., 0., 0., 0.]]))
    assert torch.equal(translate(x, torch.zeros(1, 2, dtype=torch.long)), x)


def test_cutout_matches_a_hand_computation():
    x = torch.ones(2, 1, 4, 4)
    corner = torch.tensor([[-1, 2], [1, 1]])             # first square half outside the image
    out = cutout(x, corner, (2, 2))
    first = torch.ones(4, 4)
    first[0, 2:] = 0                                     # rows -1..0 and columns 2..3, clipped
    second = torch.ones(4, 4)
    second[1:3, 1:3] = 0
    assert torch.equal(out[:, 0], torch.stack([first, second]))


def official_translation_cutout(x, tx, ty, ox, oy, ratio_t=0.125, ratio_c=0.5):
    """rand_translation then rand_cutout of mit-han-lab/data-efficient-gans DiffAugment_pytorch.py,
    with the random draws passed in (tx, ty: shifts; ox, oy: cutout offsets, each (B, 1, 1))."""
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(x.size(2)),
                                                torch.arange(x.size(3)), indexing="ij")
    grid_x = torch.clamp(grid_x + tx + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + ty + 1, 0, x.size(3) + 1)
    x_pad = torch.nn.functional.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    x = x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)
    cutout_size = int(x.size(2) * ratio_c + 0.5), int(x.size(3) * ratio_c + 0.5)
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(cutout_size[0]),
                                                torch.arange(cutout_size[1]), indexing="ij")
    grid_x = torch.clamp(grid_x + ox - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + oy - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


@pytest.mark.parametrize("size", [16, 13])              # an even and an odd cutout side
def test_policy_equals_the_official_code(size):
    aug = DiffAugment()
    x = torch.randn(64, 2, size, size, generator=torch.Generator().manual_seed(1))
    d = aug.draw(len(x), (size, size), torch.Generator().manual_seed(2))
    side = int(size * 0.5 + 0.5)
    centre = d.corner + side // 2
    col = lambda t, i: t[:, i, None, None]                               # noqa: E731
    expected = official_translation_cutout(x, col(d.shift, 0), col(d.shift, 1), col(centre, 0), col(centre, 1))
    assert torch.equal(aug.apply(x, d), expected)
    # the draws cover the official ranges: shifts in [-s, s], centres in [0, size + 1 - side % 2)
    s = int(size * 0.125 + 0.5)
    big = aug.draw(4000, (size, size), torch.Generator().manual_seed(3))
    assert big.shift.min() == -s and big.shift.max() == s
    assert big.corner.min() + side // 2 == 0 and big.corner.max() + side // 2 == size - side % 2
    assert d.cutout_size == (side, side)


# --- same transform on real and fake, fresh per call, differentiable -----------------------------

def test_same_random_state_gives_real_and_fake_the_same_transform():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(8, 1, 32, 32, generator=g) + 1, torch.rand(8, 1, 32, 32, generator=g) + 1
    aug = DiffAugment()
    a = aug(real, torch.Generator().manual_seed(5))
    b = aug(fake, torch.Generator().manual_seed(5))
    assert torch.equal(a == 0, b == 0)                   # the same pixels shifted out and cut out
    assert (a == 0).float().mean() > 0.2                 # and there are some (a 16 x 16 square of 32 x 32)
    both = aug(2 * real - 3 * fake, torch.Generator().manual_seed(5))
    assert torch.allclose(both, 2 * a - 3 * b)           # one linear map, applied to both
    assert not torch.equal(aug(real, torch.Generator().manual_seed(6)), a)
    torch.manual_seed(0)
    first, second = aug(real), aug(real)                 # the global generator: fresh at each call
    assert not torch.equal(first, second)


def test_the_ops_are_differentiable():
    x = torch.randn(3, 1, 8, 8, dtype=torch.double, requires_grad=True)
    d = DiffAugment().draw(3, (8, 8), torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda t: DiffAugment().apply(t, d), (x,))
    # the gradient of a sum is the transform's mask: 1 where an input pixel still shows, else 0
    DiffAugment().apply(x, d).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}


def test_the_generator_is_trained_through_the_augmentation(monkeypatch):
    torch.manual_seed(0)
    model = build("LSGAN-DiffAug-EMA", image_size=64)
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    seen = []
    judge = model.judge
    monkeypatch.setattr(model, "judge", lambda images, y=None: seen.append(images) or judge(images, y))
    model.loss(x, None, "g")["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.G.parameters())
    assert all(p.grad is None for p in model.G_ema.parameters())
    model.loss(x, None, "d")
    fake_g, real, fake_d = seen
    for images in seen:          # every image D saw has a zero (mid-grey) square, at least a quarter in view
        assert ((images == 0).flatten(1).sum(1) >= 16 * 16).all()
    assert not torch.equal(real, x)                      # D never sees the bare real batch
    assert not torch.equal(real == 0, fake_d == 0)       # fresh parameters for each batch D sees


# --- the EMA copy ----------------------------------------------------------------------------------

def test_ema_update_matches_a_hand_computation():
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(7)
    assert ema.decay_now() == pytest.approx(1 / 10)     # warm-up (1 + 0) / (10 + 0)
    ema.update(net)                                      # 0.1 * 1 + 0.9 * 3
    assert ema.shadow[0].weight.item() == pytest.approx(2.8)
    assert ema.shadow[1].running_mean.item() == pytest.approx(0.9 * 2.0)
    assert ema.shadow[1].num_batches_tracked.item() == 7
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
    ema.update(net)                                      # d = 2 / 11
    assert ema.shadow[0].weight.item() == pytest.approx(2 / 11 * 2.8 + 9 / 11 * -1.0)
    for _ in range(20):
        ema.update(net)
    assert ema.decay_now() == 0.5 and int(ema.updates) == 22     # the cap once (1 + n) / (10 + n) > 0.5
    assert not any(p.requires_grad for p in ema.parameters())


def test_the_lsgan_samples_from_its_ema_after_generator_steps_only():
    torch.manual_seed(0)
    model = LSGAN(64, ema_decay=0.999)
    z = model.sample_latent(2, torch.Generator().manual_seed(1))
    with model.evaluating():
        before = model.generate(z)
        assert torch.allclose(before, model.input_spec.to_unit(model.G(z.reshape(2, -1, 1, 1))))
    with torch.no_grad():
        for p in model.G.parameters():
            p.add_(0.01)
    model.after_step("d")
    assert int(model.G_ema.updates) == 0
    model.after_step("g")
    w, shadow = model.G[0].weight, model.G_ema.shadow[0].weight
    assert torch.allclose(shadow, w - 0.01 * 0.1)       # first update: 0.1 * old + 0.9 * new
    with model.evaluating():
        assert torch.equal(model.decode(z), model.G_ema(z.reshape(2, -1, 1, 1)))
        assert not torch.allclose(model.decode(z), model.G(z.reshape(2, -1, 1, 1)))
    assert model.param_counts() == build("LSGAN", image_size=64).param_counts()   # the copy is not counted
    assert any(k.startswith("G_ema.shadow.") for k in model.state_dict())      # but is checkpointed


def test_preset_and_errors():
    p = PRESETS["LSGAN-DiffAug-EMA"]
    assert "not in the paper" in p.description and not p.conditional
    model = build("LSGAN-DiffAug-EMA")
    assert isinstance(model.augment, DiffAugment) and model.G_ema.decay == 0.999
    assert model.schedule == build("LSGAN").schedule and model.lr == build("LSGAN").lr
    assert build("LSGAN").augment is None and build("LSGAN").G_ema is None
    with pytest.raises(CxrnbError, match="ema_decay must be in"):
        LSGAN(64, ema_decay=1.0)
    assert isinstance(DiffAugment().draw(2, (8, 8)), Draw)
    assert math.isclose(DiffAugment().translation, 1 / 8)
