"""The project classifier on a toy problem it must solve (a bright square or not), its AUROC against
sklearn computed directly, persistence, and its input checks."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrnb.errors import CxrnbError
from cxrnb.evaluation.classifier import (
    Classifier,
    ClassifierConfig,
    CxrNet,
    auroc_per_finding,
    fit_classifier,
    resize_to,
    spread_penalty,
)
from cxrnb.labels import FINDINGS, LABELS

FAST = ClassifierConfig(epochs=3, batch_size=16, width=8, lr=3e-3)


def toy(n: int, seed: int):
    """uint8 32 px noise images; finding 0 ('Atelectasis') = a bright 8x8 square somewhere,
    finding 1 = a coin flip (unlearnable), the rest never present; 'No Finding' when neither."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (n, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.zeros(n, len(LABELS))
    y[:, 0] = torch.arange(n) % 2
    y[:, 1] = torch.randint(0, 2, (n,), generator=g)
    y[:, -1] = (y[:, :14].sum(1) == 0).float()
    for i in torch.nonzero(y[:, 0]).flatten().tolist():
        r, c = torch.randint(0, 24, (2,), generator=g).tolist()
        x[i, r:r + 8, c:c + 8] = 255
    return x, y


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    x, y = toy(128, seed=0)
    return fit_classifier(x, y, FAST, val=toy(64, seed=1), progress=False)


def test_learns_the_bright_square(trained):
    auc = auroc_per_finding(trained, *toy(64, seed=2))
    assert list(auc.index) == list(FINDINGS)
    assert auc["Atelectasis"] > 0.9


def test_findings_with_one_class_only_have_no_auroc(trained):
    auc = auroc_per_finding(trained, *toy(64, seed=2))
    assert auc.iloc[2:].isna().all()                       # never present in the toy test set
    assert auc.notna().sum() == 2 and auc.mean() == pytest.approx(auc.iloc[:2].mean())


def test_auroc_per_finding_equals_sklearn_directly(trained):
    x, y = toy(64, seed=3)
    p = trained.predict_proba(x).numpy()
    auc = auroc_per_finding(trained, x.float().unsqueeze(1) / 255, y)   # float input, same images
    for j in range(2):
        assert auc.iloc[j] == pytest.approx(roc_auc_score(y[:, j].numpy(), p[:, j]))


def test_history_and_best_epoch(trained):
    assert [h["epoch"] for h in trained.history] == [1, 2, 3]
    assert all(np.isfinite(h["train_loss"]) for h in trained.history)
    # the kept weights are the best validation epoch's
    best = max(h["val_macro_auroc"] for h in trained.history)
    assert auroc_per_finding(trained, *toy(64, seed=1)).mean() == pytest.approx(best)


def test_features_and_probabilities_shapes(trained):
    x, _ = toy(10, seed=4)
    assert trained.features(x).shape == (10, 8 * FAST.width) == (10, trained.net.dim)
    p = trained.predict_proba(x)
    assert p.shape == (10, len(FINDINGS)) and ((p > 0) & (p < 1)).all()


def test_same_seed_same_model():
    x, y = toy(32, seed=0)
    cfg = ClassifierConfig(epochs=1, batch_size=16, width=4)
    a, b = (fit_classifier(x, y, cfg, progress=False) for _ in range(2))
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)


def test_save_and_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "clf" / "classifier.pt")
    assert not list(path.parent.glob("*.tmp*"))
    back = Classifier.load(path, device="auto")              # the one device contract: "auto" works
    x, _ = toy(8, seed=5)
    assert torch.equal(back.predict_proba(x), trained.predict_proba(x))
    assert back.cfg == trained.cfg and back.history == trained.history
    with pytest.raises(CxrnbError, match="no classifier"):
        Classifier.load(tmp_path / "missing.pt")
    with pytest.raises(CxrnbError, match="unknown device 'gpu0'"):
        Classifier.load(path, device="gpu0")


def test_network_is_compact():
    n = sum(p.numel() for p in CxrNet(32).parameters())
    assert n < 1.5e6                                       # vs 11.2 M for a ResNet-18
    assert CxrNet(32)(torch.rand(2, 1, 64, 64)).shape == (2, 14)


@pytest.mark.parametrize("images,labels,match", [
    (torch.zeros(32, 3, 32, 32), torch.zeros(32, 15), "greyscale"),
    (torch.zeros(32, 32, 32), torch.zeros(32, 13), "labels must be"),
    (torch.zeros(32, 32, 32), torch.zeros(31, 15), "labels must be"),
    (torch.full((32, 32, 32), 2.0), torch.zeros(32, 15), r"\[0, 1\]"),
    (torch.zeros(8, 32, 32, dtype=torch.uint8), torch.zeros(8, 15), "fewer than one batch"),
])
def test_bad_input_is_a_one_line_error(images, labels, match):
    with pytest.raises(CxrnbError, match=match):
        fit_classifier(images, labels, FAST, progress=False)


def test_steps_override_epochs_and_cut_the_last_epoch_short():
    x, y = toy(64, seed=0)
    clf = fit_classifier(x, y, ClassifierConfig(epochs=9, steps=5, batch_size=16, width=4), progress=False)
    assert [h["steps"] for h in clf.history] == [4, 1]       # 64 // 16 = 4 per epoch, then 1
    with pytest.raises(CxrnbError, match="gradient steps"):
        fit_classifier(x, y, ClassifierConfig(steps=0, batch_size=16, width=4), progress=False)


def test_spread_penalty_is_vicreg_variance_and_covariance_by_hand():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 3, generator=g)
    h = torch.cat([a, 0.5 * a[:, :1]], 1)                   # a 4th dimension: half the first, std < 1
    hc = h - h.mean(0)
    std, cov = hc.std(0), (hc.T @ hc) / (len(h) - 1)
    want = torch.clamp(1 - torch.sqrt(std ** 2 + 1e-4), min=0).mean() \
        + (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / 4
    assert spread_penalty(h).item() == pytest.approx(want.item(), rel=1e-5)
    assert spread_penalty(h).item() > spread_penalty(a * 3).item()   # spread, decorrelated: lower


def test_a_resolution_classifier_reads_any_size_at_its_own():
    clf = Classifier(CxrNet(4), ClassifierConfig(width=4), resolution=32, feature_scale=2.0)
    x = torch.rand(3, 1, 96, 96)
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(clf.features(x), 2.0 * clf.net.features(small))
        torch.testing.assert_close(clf.predict_proba(x), torch.sigmoid(clf.net(small)))
    assert torch.equal(resize_to(small, 32), small)
