"""The shipped rulers: checksums are checked at load, any image size is read at the ruler's
resolution, retraining is deterministic, and on real data the shipped numbers hold and the ladder's
rungs stand clear of the real-vs-real floor."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrnb.errors import CxrnbError
from cxrnb.evaluation import evaluate as ev
from cxrnb.evaluation import features, ladder, ruler
from cxrnb.evaluation.classifier import ClassifierConfig
from cxrnb.evaluation.metrics import frechet_from_features

TINY = (ruler.RulerSpec("cxr-classifier", "penultimate", ClassifierConfig(epochs=1, batch_size=16, width=4),
                        resolution=32, width=4, threads=1),
        ruler.RulerSpec("random-init", "stages", None, resolution=32, width=4, threads=1))


@pytest.fixture
def weights_copy(tmp_path):
    """A copy of the shipped weights folder to damage (the shipped files are never touched)."""
    return shutil.copytree(ruler.WEIGHTS_DIR, tmp_path / "weights")


@pytest.mark.parametrize("name", ["cxr-classifier", "random-init"])
def test_a_corrupted_or_missing_file_is_a_one_line_error(weights_copy, name):
    path = weights_copy / f"{name}.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    load = (lambda: ruler.load_ruler(weights_dir=weights_copy)) if name == "cxr-classifier" else \
        (lambda: features.RandomInitFeatures(weights_dir=weights_copy))
    with pytest.raises(CxrnbError, match="cxrnb ruler --retrain") as err:
        load()
    assert str(path) in str(err.value) and "SHA-256" in str(err.value) and "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(CxrnbError, match=f"{path}.* is missing; `cxrnb ruler --retrain`"):
        load()


def test_the_shipped_files_match_their_manifest():
    for name in ("cxr-classifier", "random-init"):
        path, entry = ruler.verified(name)
        assert ruler.file_sha256(path) == entry["sha256"]
        net, _ = ruler.load_network(name)
        assert ruler.state_sha256(net) == entry["state_sha256"]
    facts = ruler.ruler_facts()
    assert set(facts) == {"cxr-classifier", "random-init"} and "test_macro_auroc" in facts["cxr-classifier"]


def test_any_image_size_is_read_at_the_ruler_resolution():
    clf = ruler.load_ruler()
    size = clf.resolution
    x = torch.rand(5, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(clf.features(x), clf.features(small))
    torch.testing.assert_close(clf.predict_proba(x), clf.predict_proba(small))
    with torch.no_grad():       # the reference: the network and the manifest's scale, read directly
        want = clf.net.features(small) * ruler.read_manifest()["spaces"]["cxr-classifier"]["scale"]
    torch.testing.assert_close(features.ClassifierFeatures(clf)(x), want)
    rnd = features.RandomInitFeatures()
    with torch.no_grad():
        want = rnd.net.stage_features(small) * rnd.scale
    torch.testing.assert_close(rnd(x), want)


def test_retraining_is_deterministic(phantom_root, tmp_path):
    data = ruler.ruler_data(phantom_root, 32)
    for spec in TINY:
        a, b = ruler.build(spec, data), ruler.build(spec, data)
        assert ruler.state_sha256(a) == ruler.state_sha256(b)
    first = ruler.retrain(phantom_root, tmp_path, TINY, progress=False)
    sha = {n: e["sha256"] for n, e in ruler.read_manifest(tmp_path)["spaces"].items()}
    again = ruler.retrain(phantom_root, tmp_path, TINY, progress=False)
    assert all("new" in line for line in first) and all("unchanged" in line for line in again)
    assert sha == {n: e["sha256"] for n, e in ruler.read_manifest(tmp_path)["spaces"].items()}
    clf = ruler.load_ruler(weights_dir=tmp_path)       # what retrain wrote loads and checks out
    assert clf.features(torch.rand(3, 1, 64, 64)).shape == (3, 32)


@pytest.fixture(scope="module")
def real_data(real_root):
    return ruler.ruler_data(real_root, ruler.RESOLUTION)


def test_shipped_ruler_numbers_hold_on_real_data(real_data):
    manifest = ruler.read_manifest()["spaces"]
    for spec in ruler.SPECS:
        net, entry = ruler.load_network(spec.name)
        got = ruler.measure(net, spec, real_data)
        for key, value in got.items():
            assert value == pytest.approx(manifest[spec.name][key], rel=1e-4), (spec.name, key)
        assert entry["data"]["images"] == {"train": len(real_data.train), "val": len(real_data.val),
                                           "test": len(real_data.test)}
    assert manifest["cxr-classifier"]["effective_dimension"] >= 8
    assert manifest["cxr-classifier"]["test_macro_auroc"] >= 0.72


def ladder_fds(ext, data) -> dict[str, tuple[float, float]]:
    """FD mean and sd over evaluate's own subsets (n_repeats=5, seed=0): its FD rows, alone."""
    rungs = {ev.LADDER + k: v for k, v in ladder.ladder(data.test, data.train_mean, seed=0).items()}
    sets = {ev.REAL: data.test, **rungs}
    sub = ev.draw_subsets(sets, rungs, len(data.test) // 2, 5, seed=0)
    feats = {n: ext(x).double() for n, x in sets.items()}
    out = {}
    for n in sets:
        v = [frechet_from_features(feats[ev.REAL][sub.reference(r)], feats[n][sub.pick(n, r)])
             for r in range(5)]
        out[n] = (float(np.mean(v)), float(np.std(v, ddof=1)))
    return out


def test_every_rung_beyond_flipped_stands_clear_of_the_floor(real_root):
    from cxrnb.study.scoring import eval_data

    data = eval_data(str(real_root), ruler.RESOLUTION)
    for ext in (features.ClassifierFeatures(ruler.load_ruler()), features.RandomInitFeatures()):
        fds = ladder_fds(ext, data)
        floor, floor_sd = fds.pop(ev.REAL)
        assert 0.1 < floor < 1e3, (ext.name, floor)          # readable units, not 1e-6
        for rung, (m, sd) in fds.items():
            if rung != ev.LADDER + "flipped":
                assert m - floor > 2 * np.hypot(sd, floor_sd), (ext.name, rung, m, sd, floor, floor_sd)
