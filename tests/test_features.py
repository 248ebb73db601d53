"""Feature extractors: missing weights are reported with a reason and never constructed; with a
weights file present, the input scaling matches each library's own convention."""

import pytest
import torch

from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError
from cxrnb.evaluation import features, ruler
from cxrnb.evaluation.classifier import Classifier, ClassifierConfig, CxrNet


def test_as_unit_images_accepts_uint8_and_float():
    u8 = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    x = as_unit_images(u8.numpy())
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert x.flatten().tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])
    f = torch.rand(3, 1, 4, 4)
    assert torch.equal(as_unit_images(f), f)


@pytest.fixture
def no_construction(monkeypatch):
    """Fail the test if any pretrained network is built (a build could try to download)."""
    import torchvision.models
    import torchxrayvision as xrv

    def refuse(*args, **kwargs):
        raise AssertionError("a network with missing weights was constructed")
    monkeypatch.setattr(xrv.models, "DenseNet", refuse)
    monkeypatch.setattr(torchvision.models, "inception_v3", refuse)


def test_missing_xrv_weights_are_reported_not_constructed(tmp_path, no_construction):
    ext = features.XrvDenseNetFeatures(cache_dir=tmp_path)
    assert not ext.available
    assert str(tmp_path) in ext.why_unavailable and "not found" in ext.why_unavailable
    assert ext.status().startswith("unavailable: ")
    with pytest.raises(CxrnbError, match="unavailable"):
        ext(torch.rand(2, 1, 32, 32))


def test_xrv_default_cache_is_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = features.xrv_weights_path()
    assert path.parent == tmp_path / ".torchxrayvision" / "models_data"
    assert path.name.startswith("nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121")


def test_missing_inception_weights_are_reported_not_constructed(tmp_path, monkeypatch, no_construction):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))          # torch.hub.get_dir() -> tmp/hub
    ext = features.InceptionFeatures()
    assert not ext.available and ext.weights is None
    assert str(tmp_path / "hub" / "checkpoints") in ext.why_unavailable


def test_available_extractors_reports_every_space(tmp_path, no_construction):
    exts = features.available_extractors(xrv_cache_dir=tmp_path, hub_dir=tmp_path)
    assert [e.name for e in exts] == ["cxr-classifier", "random-init", "xrv-densenet121", "inception-v3"]
    assert [e.available for e in exts] == [True, True, False, False]   # the shipped two need no download
    manifest = ruler.read_manifest()["spaces"]
    assert [e.dim for e in exts[:2]] == [manifest["cxr-classifier"]["dim"], manifest["random-init"]["dim"]]
    assert features.ClassifierFeatures(None).why_unavailable.startswith("no classifier given")


def test_classifier_features_equal_the_classifier_own(tmp_path):
    clf = Classifier(CxrNet(4), ClassifierConfig(width=4))
    x = torch.rand(70, 1, 32, 32)
    ext = features.ClassifierFeatures(clf, batch_size=32)
    f = ext(x)
    assert f.shape == (70, 32) == (70, ext.dim)
    torch.testing.assert_close(f, clf.features(x))


@pytest.mark.slow
def test_xrv_densenet_with_a_weights_file_matches_xrv_convention(tmp_path):
    import numpy as np
    import torchxrayvision as xrv

    torch.manual_seed(0)
    reference = xrv.models.DenseNet().eval()   # random weights in xrv's own saved-model format
    torch.save(reference, features.xrv_weights_path(tmp_path))
    ext = features.XrvDenseNetFeatures(cache_dir=tmp_path, batch_size=2)
    assert ext.available
    u8 = np.random.default_rng(0).integers(0, 256, (3, 1, 64, 64)).astype(np.uint8)
    ours = ext(u8)
    # xrv's documented pipeline: normalize(img, 255) -> [-1024, 1024]; fix_resolution to 224
    x = torch.from_numpy(xrv.utils.normalize(u8, 255))
    x = xrv.utils.fix_resolution(x, 224, reference)
    with torch.no_grad():
        want = reference.features2(x)
    assert ours.shape == (3, 1024)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_torchvision_inception_with_a_weights_file_matches_transform_input(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    (tmp_path / "checkpoints").mkdir()
    torch.save(net.state_dict(), tmp_path / "checkpoints" / features.TV_INCEPTION_FILE)
    ext = features.InceptionFeatures(hub_dir=tmp_path, batch_size=2)
    assert ext.available and ext.weights == "torchvision IMAGENET1K_V1"
    x = torch.rand(3, 1, 299, 299)
    ours = ext(x)
    # torchvision's own route for these weights: ImageNet-normalised RGB with transform_input=True
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    ref.load_state_dict(net.state_dict())
    ref.fc = torch.nn.Identity()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ref.eval()((x.expand(-1, 3, -1, -1) - mean) / std)
    assert ours.shape == (3, 2048)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


def test_random_init_features_are_the_seeded_untrained_network_at_every_stage():
    x = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    ext = features.RandomInitFeatures()
    fa = ext(x)
    assert fa.shape == (6, ext.dim) and ext.dim == 15 * 32
    torch.testing.assert_close(ext(x[:2]), fa[:2])                # no batch dependence (eval BatchNorm)
    # the reference: an untrained CxrNet drawn from seed 0, each stage's output pooled by hand
    torch.manual_seed(0)
    ref = CxrNet(32).eval()
    with torch.no_grad():
        h, pooled = 2 * x - 1, []
        for i, layer in enumerate(ref.body):
            h = layer(h)
            if i in (2, 8, 14, 20):                               # each stage's last ReLU
                pooled.append(h.mean((2, 3)))
    torch.testing.assert_close(fa, torch.cat(pooled, 1) * ext.scale)
