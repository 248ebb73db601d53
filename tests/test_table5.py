"""Table 5: our counts against the models' own counts, torchvision and the paper; the speed arithmetic."""

import math

import pytest
import torchvision

from cxrnb.bench.table5 import CXR14_IMAGES, TABLE5, counts, print_table5, table5
from cxrnb.models import build

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paper_size_counts():
    return counts()


def test_counts_are_the_models_own(paper_size_counts):
    presets = {preset for arch in TABLE5 for _, preset, _, _ in arch.parts}
    own = {preset: build(preset, weights=None).param_counts() for preset in presets}
    for arch in TABLE5:
        for part, preset, key, _ in arch.parts:  # noqa: B007 (the query reads it as @part)
            row = paper_size_counts.query("architecture == @arch.name and part == @part").iloc[0]
            assert row.params == own[preset][key]


def test_counts_match_the_paper_where_spec_says_so(paper_size_counts):
    """LSGAN, VAE, VGG16 encoder and both decoders match; the GMVAE totals cannot (module docstring)."""
    t = paper_size_counts
    assert set(t[~t.match].part) == {"Total with Decoder1", "Total with Decoder2"}
    assert (t[~t.match].params > t[~t.match]["paper params"]).all()   # we count more layers


def test_independent_references_for_the_gmvae_parts(paper_size_counts):
    """VGG16 features from torchvision itself; decoder weights by hand from the paper's Tables 2-3."""
    t = paper_size_counts.set_index(["architecture", "part"])
    vgg = sum(p.numel() for p in torchvision.models.vgg16().features.parameters())
    assert t.loc[("GM-VAE (Encoder in Train)", "VGG16 Features Encoder"), "params"] == vgg
    table2 = 4 * 4 * (14 * 6 + 6 * 3 + 3 * 3 + 3 * 3)
    table3 = 4 * 4 * (128 * 64 + 64 * 32 + 32 * 16 + 16 * 3)
    assert t.loc[("GM-VAE (Encoder in Eval)", "Decoder1"), "params"] == table2 == 1_920
    assert t.loc[("GM-VAE (Encoder in Eval)", "Decoder2"), "params"] == table3 == 172_800


def test_paper_literals_add_up():
    """The transcribed numbers are consistent with the paper's own totals."""
    paper = {(a.name, part): n for a in TABLE5 for part, _, _, n in a.parts}
    assert paper["GAN", "Discriminator"] + paper["GAN", "Generator"] == paper["GAN", "Total"]
    vae = ("Encoder", "Decoder", "Mean and Logvar: mean", "Mean and Logvar: logvar")
    assert sum(paper["VAE", p] for p in vae) == paper["VAE", "Total"]
    enc = paper["GM-VAE (Encoder in Train)", "VGG16 Features Encoder"]
    for d in ("Decoder1", "Decoder2"):
        assert enc + paper["GM-VAE (Encoder in Train)", d] == paper["GM-VAE (Encoder in Train)",
                                                                    f"Total with {d}"]
    assert [a.paper_minutes for a in TABLE5] == [24, 48, 30, 65]


def test_speed_columns_and_extrapolation(capsys):
    t = print_table5(device="cpu", size=64, steps=1, batch=2)
    speed = t.drop_duplicates("architecture")
    assert len(speed) == 4 and (speed["img/s"] > 0).all() and speed["img/s"].map(math.isfinite).all()
    for _, r in speed.iterrows():        # minutes for 112,120 images at the measured rate, by hand
        assert r["min/epoch"] == pytest.approx(112_120 / r["img/s"] / 60)
    assert CXR14_IMAGES == 112_120 and set(speed["image size"]) == {64} and set(speed.batch) == {2}
    out = capsys.readouterr().out
    assert "on cpu" in out and "2,795,904" in out and "77.9" in out   # T4: 112,120 / (24 * 60)


def test_bad_device_is_refused():
    from cxrnb.errors import CxrnbError
    with pytest.raises(CxrnbError):
        table5(device="tpu")
