"""Sample-quality metrics against closed forms, torchmetrics' own formulas, scipy/sklearn brute force
and constructed cases whose answer is known."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

from cxrnb.errors import CxrnbError
from cxrnb.evaluation import metrics
from cxrnb.evaluation.evaluate import LADDER, REAL, evaluate
from cxrnb.evaluation.features import FeatureExtractor


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- Fréchet distance

def test_frechet_matches_the_closed_form_for_diagonal_gaussians(rng):
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    closed = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    ours = metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert ours == pytest.approx(closed, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_on_full_covariances(rng):
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + np.eye(8), b @ b.T + np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("n,d", [(200, 10), (40, 64)])   # the second: singular covariances (n < d)
def test_frechet_from_features_matches_torchmetrics(rng, n, d):
    f1, f2 = rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(n + 7, d))
    t1, t2 = torch.from_numpy(f1), torch.from_numpy(f2)
    ref = _compute_fid(t1.mean(0), t1.T.cov(), t2.mean(0), t2.T.cov()).item()
    assert metrics.frechet_from_features(f1, f2) == pytest.approx(ref, rel=1e-6)


def test_frechet_of_a_set_with_itself_is_zero(rng):
    f = rng.normal(size=(30, 50))      # singular covariance: sqrt of ~1e-15 eigenvalues leaves ~1e-7
    assert abs(metrics.frechet_from_features(f, f)) < 1e-7 * np.trace(np.cov(f, rowvar=False))


def test_frechet_rejects_mismatched_shapes(rng):
    with pytest.raises(CxrnbError, match="one D"):
        metrics.frechet_from_features(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))
    with pytest.raises(CxrnbError, match="covariances"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(CxrnbError, match="at least 2"):
        metrics.frechet_from_features(rng.normal(size=(1, 3)), rng.normal(size=(10, 3)))


# ---------------------------------------------------------------- KID

def test_kid_by_hand_on_two_points():
    # k(x, y) = (x y / 1 + 1)^3 on X = {0, 1}, Y = {1, 2}:
    # off-diagonal Kxx = 1, 1; Kyy = 27, 27 -> (2 + 54) / 2 = 28; mean Kxy = (1 + 1 + 8 + 27) / 4.
    mean, std = metrics.kid([[0.0], [1.0]], [[1.0], [2.0]], subsets=3, subset_size=2)
    assert mean == pytest.approx(28 - 2 * 37 / 4)
    assert std == pytest.approx(0.0)


def test_kid_matches_torchmetrics_poly_mmd(rng):
    f1, f2 = rng.normal(size=(50, 12)), rng.normal(0.2, 1, size=(50, 12))
    mean, _ = metrics.kid(f1, f2, subsets=2, subset_size=50)  # full sets: order does not matter
    ref = poly_mmd(torch.from_numpy(f1), torch.from_numpy(f2)).item()
    assert mean == pytest.approx(ref, rel=1e-10)


def test_kid_separates_same_from_shifted_distributions(rng):
    same = metrics.kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), 20, 100)
    shifted = metrics.kid(rng.normal(size=(200, 8)), rng.normal(1, 1, size=(200, 8)), 20, 100)
    assert abs(same[0]) < 3 * same[1] + 1e-3 < shifted[0]


def test_kid_rejects_a_subset_larger_than_the_sets(rng):
    with pytest.raises(CxrnbError, match="subset_size"):
        metrics.kid(rng.normal(size=(10, 2)), rng.normal(size=(20, 2)), subset_size=11)


# ---------------------------------------------------------------- precision / recall

def test_identical_sets_have_precision_and_recall_one(rng):
    f = rng.normal(size=(60, 5))
    assert metrics.precision_recall(f, f) == (1.0, 1.0)


def test_disjoint_far_sets_have_precision_and_recall_zero(rng):
    far = rng.normal(100, 1, (60, 5))
    assert metrics.precision_recall(rng.normal(size=(60, 5)), far) == (0.0, 0.0)


def test_fake_inside_one_real_mode_is_precise_but_does_not_cover(rng):
    real = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(50, 1, (100, 2))])
    fake = real[:100][rng.permutation(100)[:60]]              # 60 points of the first mode only
    precision, recall = metrics.precision_recall(real, fake)
    assert precision == 1.0
    assert recall < 0.55                                       # the second mode is not covered


def test_precision_recall_match_a_sklearn_brute_force(rng):
    real, fake = rng.normal(size=(80, 4)), rng.normal(0.5, 1.2, size=(70, 4))

    def radii(f, k=3):
        return NearestNeighbors(n_neighbors=k + 1).fit(f).kneighbors(f)[0][:, k]

    ref_p = (cdist(fake, real) <= radii(real)).any(1).mean()
    ref_r = (cdist(real, fake) <= radii(fake)).any(1).mean()
    assert metrics.precision_recall(real, fake, k=3, chunk=16) == pytest.approx((ref_p, ref_r))


# ---------------------------------------------------------------- MS-SSIM diversity

def test_ms_ssim_diversity_of_copies_is_one_and_of_noise_near_zero():
    one = torch.rand(1, 1, 32, 32)
    assert metrics.ms_ssim_diversity(one.repeat(10, 1, 1, 1), pairs=20) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ms_ssim_diversity(torch.rand(10, 1, 32, 32), pairs=20) < 0.1


def test_ms_ssim_diversity_is_lower_for_a_more_varied_set():
    base = torch.rand(1, 1, 64, 64)
    collapsed = (base + 0.05 * torch.randn(12, 1, 64, 64)).clamp(0, 1)
    varied = (torch.rand(12, 1, 1, 1) * base + 0.3 * torch.rand(12, 1, 64, 64)).clamp(0, 1)
    assert metrics.ms_ssim_diversity(varied, 40) < metrics.ms_ssim_diversity(collapsed, 40)


def test_ms_ssim_settings_work_at_the_project_sizes_and_reject_tiny_images():
    assert sum(metrics.MS_SSIM_BETAS) == pytest.approx(1.0)
    for size in (32, 64, 128):
        x = torch.rand(2, 1, size, size)
        assert metrics.ms_ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    with pytest.raises(CxrnbError, match="28 px"):
        metrics.ms_ssim_diversity(torch.rand(4, 1, 16, 16))
    with pytest.raises(CxrnbError, match="at least 2"):
        metrics.ms_ssim_diversity(torch.rand(1, 1, 32, 32))


# ---------------------------------------------------------------- memorisation

def test_nearest_matches_scipy_brute_force(rng):
    a, b = rng.normal(size=(23, 6)), rng.normal(size=(41, 6))
    d, i = metrics.nearest(a, b, chunk=7)
    full = cdist(a, b)
    np.testing.assert_array_equal(i.numpy(), full.argmin(1))
    np.testing.assert_allclose(d.numpy(), full.min(1), rtol=1e-5)


def test_memorisation_finds_copied_training_images():
    g = torch.Generator().manual_seed(0)
    train_u8 = torch.randint(0, 256, (40, 32, 32), dtype=torch.uint8, generator=g)   # a uint8 cache
    test = torch.rand(30, 1, 32, 32, generator=g)
    new = torch.rand(6, 1, 32, 32, generator=g)
    copies = train_u8[[3, 17]].unsqueeze(1).float() / 255
    generated = torch.cat([new, copies])
    mem = metrics.memorisation(generated, train_u8, test, chunk=8)["pixel"]

    closest = mem.closest(2)
    assert closest.generated.tolist() == [6, 7] and closest.train.tolist() == [3, 17]
    assert closest.distance.max() < 1e-3
    # RMS grey-level distance, checked for one new image by hand
    ref = ((new[0] - train_u8.float().unsqueeze(1) / 255) ** 2).mean((1, 2, 3)).sqrt().min()
    assert mem.gen_dist[0] == pytest.approx(ref.item(), rel=1e-4)
    assert mem.threshold == pytest.approx(np.quantile(mem.test_dist, 0.05))
    assert mem.fraction_below == pytest.approx((mem.gen_dist < mem.threshold).mean())
    assert mem.fraction_below >= 2 / 8


def test_memorisation_in_a_feature_space_and_shape_check():
    x = torch.rand(20, 1, 32, 32)
    def pooled(imgs):
        return torch.nn.functional.avg_pool2d(torch.as_tensor(imgs).float(), 8).flatten(1)

    mem = metrics.memorisation(x[:4], x, torch.rand(10, 1, 32, 32), feature_fn=pooled, chunk=6)
    assert set(mem) == {"pixel", "feature"}
    assert mem["feature"].gen_nearest.tolist() == [0, 1, 2, 3]
    with pytest.raises(CxrnbError, match="one shape"):
        metrics.memorisation(x[:4], x, torch.rand(10, 1, 64, 64))


# ---------------------------------------------------------------- evaluate

class Pooled(FeatureExtractor):
    """A deterministic 16-d feature space for tests: 8x8 average pooling of 32 px images."""

    name, dim = "pooled", 16

    def _forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 8).flatten(1)


class Missing(FeatureExtractor):
    name = "missing"

    def __init__(self):
        super().__init__()
        self.why_unavailable = "weights file /nowhere not found"


def _blobs(n, g, shift=0.0):
    """Smooth random images: a bright disc at a random place on a darker background."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    c = 8 + 16 * torch.rand(n, 2, generator=g) + shift
    r2 = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2
    return (0.2 + 0.6 * (r2 < 36).float() + 0.05 * torch.rand(n, 32, 32, generator=g)).unsqueeze(1)


def test_evaluate_ranks_a_real_like_model_above_noise_and_reports_missing_spaces():
    g = torch.Generator().manual_seed(0)
    real, good, noise = _blobs(60, g), _blobs(30, g), torch.rand(30, 1, 32, 32, generator=g)
    df = evaluate(real, {"good": good, "noise": noise}, [Pooled(), Missing()],
                  n_repeats=3, kid_subset_size=20, ms_ssim_pairs=20, progress=False)
    scored = df[df.metric != ""].set_index(["model", "space", "metric"])
    assert set(scored.index.get_level_values("model")) == {"good", "noise", REAL}
    mean = scored["mean"]
    assert mean["good", "pooled", "FD"] < mean["noise", "pooled", "FD"]
    assert mean["noise", "pooled", "precision"] == 0.0
    assert mean["noise", "pixel", "MS-SSIM"] < mean[REAL, "pixel", "MS-SSIM"]
    assert (scored["std"] >= 0).all() and (df.n_real == 30).all() and (df.n_repeats == 3).all()
    missing = df[df.space == "missing"]
    assert len(missing) == 1 and missing.note.iloc[0].startswith("unavailable: weights file")


def test_evaluate_one_repeat_equals_the_metrics_on_its_subsets():
    g = torch.Generator().manual_seed(1)
    real, fake = _blobs(40, g), _blobs(20, g, shift=3)
    df = evaluate(real, fake, [Pooled()], n_repeats=1, subset_size=20, seed=5,
                  kid_subset_size=20, progress=False).set_index(["model", "space", "metric"])
    perm = np.random.default_rng(5).permutation(40)          # evaluate's draw for the real set
    fr, ff = Pooled()(real[perm[:20]]).double(), Pooled()(fake).double()
    # FD is a function of the sets (order-free), so the generated subset of all 20 is the whole set
    ref = metrics.frechet_from_features(fr, ff)
    assert df.loc[("generated", "pooled", "FD"), "mean"] == pytest.approx(ref)
    assert np.isnan(df.loc[("generated", "pooled", "FD"), "std"])
    assert df.loc[("generated", "pooled", "density"), "mean"] == pytest.approx(
        metrics.density_coverage(fr, ff)[0])
    # the space's size and participation ratio, of the whole real set's features
    assert (df.loc[("generated", "pooled", "FD"), ["dim", "eff_dim"]].tolist()
            == pytest.approx([16, metrics.effective_dimension(Pooled()(real))]))


def test_evaluate_memorised_fraction_flags_a_model_that_copies_its_training_set():
    g = torch.Generator().manual_seed(2)
    train, real = _blobs(50, g), _blobs(40, g)
    copies, fresh = train[:20], _blobs(20, g)
    mem = metrics.memorisation({"copies": copies, "fresh": fresh}, train, real, progress=False)
    pixel = {name: m["pixel"] for name, m in mem.items()}
    df = evaluate(real, {"copies": copies, "fresh": fresh}, [], n_repeats=3,
                  memorised=pixel, ms_ssim_pairs=10, progress=False)
    frac = df[df.metric == "memorised"].set_index("model")["mean"]
    assert frac["copies"] == 1.0                  # distance 0 is below any threshold
    assert frac["fresh"] < 0.5 and frac[REAL] < 0.5
    # one threshold: the memorisation result's, shared by every model (the test images' 5th pct)
    assert pixel["copies"].threshold == pixel["fresh"].threshold == pytest.approx(
        np.quantile(pixel["fresh"].test_dist, 0.05))


def test_evaluate_rejects_too_few_images():
    with pytest.raises(CxrnbError, match="subset_size"):
        evaluate(torch.rand(10, 1, 32, 32), torch.rand(10, 1, 32, 32), [Pooled()],
                 subset_size=8, progress=False)


# ---------------------------------------------------------------- effective dimension, FD∞, density

def test_effective_dimension_is_the_participation_ratio(rng):
    # eigenvalues (4, 1, 1, 0) by construction: (Σλ)² / Σλ² = 36 / 18 = 2
    z = rng.normal(size=(20000, 3))
    z = (z - z.mean(0)) / z.std(0, ddof=1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    f = np.c_[2 * z[:, 0], z[:, 1], z[:, 2], np.zeros(len(z))] @ q.T
    assert metrics.effective_dimension(f) == pytest.approx(2.0, rel=0.02)
    assert metrics.effective_dimension(rng.normal(size=(20000, 8))) == pytest.approx(8, rel=0.02)


def test_fd_infinity_extrapolates_closer_to_the_true_distance_than_fd_at_n():
    d = 16
    mu2, s2 = np.full(d, 0.3), np.diag(np.linspace(0.5, 2, d))
    truth = metrics.frechet_distance(np.zeros(d), np.eye(d), mu2, s2)   # closed form, known
    for seed in range(3):
        r = np.random.default_rng(seed)
        a, b = r.normal(size=(400, d)), r.multivariate_normal(mu2, s2, 400)
        at_n = metrics.frechet_from_features(a, b)
        extrapolated = metrics.fd_infinity(a, b, ns=[50, 100, 200, 400], draws=3, seed=seed)
        assert at_n > truth                                  # the small-n bias is upwards
        assert abs(extrapolated - truth) < abs(at_n - truth)
    with pytest.raises(CxrnbError, match="subset sizes"):
        metrics.fd_infinity(a, b, ns=[400])


def test_density_and_coverage_on_a_hand_made_case():
    # real points 0, 1, 2, 3 on a line; k = 1: every ball has radius 1 (the nearest other point).
    # fake 0.5 lies inside the balls of 0 and 1 (distance 0.5 < 1), not of 2 (1.5); fake 10 in none.
    # density = (2 + 0) / (k · M = 2) = 1; coverage: reals 0 and 1 hold a fake, 2 and 3 not = 0.5
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    assert metrics.density_coverage(real, fake, k=1) == pytest.approx((1.0, 0.5))
    # k = 2: radii 2, 1, 1, 2; fake 0.5 in balls of 0 (0.5 < 2), 1 (0.5 < 1), 2 (1.5 < 1? no),
    # 3 (2.5 < 2? no) -> density 2 / (2 · 2) = 0.5, coverage 2 / 4
    assert metrics.density_coverage(real, fake, k=2) == pytest.approx((0.5, 0.5))


# ---------------------------------------------------------------- calibration ladder

def test_ladder_degradations_match_independent_computations():
    from scipy.ndimage import gaussian_filter
    from skimage.transform import resize

    from cxrnb.evaluation import ladder

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 64, generator=g)
    mean = torch.full((64, 64), 0.4)
    rungs = ladder.ladder(x, mean, seed=1)
    xn = x[:, 0].double().numpy()
    np.testing.assert_array_equal(rungs["flipped"][:, 0].numpy(), xn[:, :, ::-1].astype(np.float32))
    for sigma in (1, 2):          # scipy's Gaussian filter, ±3σ, mirrored borders
        ref = np.stack([gaussian_filter(im, sigma, mode="mirror", truncate=3) for im in xn])
        np.testing.assert_allclose(rungs[f"blur σ={sigma} px"][:, 0].numpy(), ref, atol=1e-5)
    small = xn.reshape(3, 16, 4, 16, 4).mean((2, 4))          # 4x4 block means = 16 px
    ref = np.stack([resize(im, (64, 64), order=1, mode="edge", anti_aliasing=False) for im in small])
    np.testing.assert_allclose(rungs["16 px and back"][:, 0].numpy(), ref, atol=1e-5)
    noise = rungs["noise σ=0.1"] - x
    inside = (rungs["noise σ=0.1"] > 0) & (rungs["noise σ=0.1"] < 1)       # not clipped
    assert float(noise[inside].std()) == pytest.approx(0.1, rel=0.05)
    blank = rungs["mean training image + noise σ=0.1"]
    assert blank.shape == x.shape and float(blank.mean()) == pytest.approx(0.4, abs=0.01)
    with pytest.raises(CxrnbError, match="differ in size"):
        ladder.ladder(x, torch.zeros(32, 32))


def test_evaluate_scores_the_ladder_on_the_held_out_half_and_orders_it():
    from cxrnb.evaluation import ladder

    g = torch.Generator().manual_seed(3)
    real = _blobs(60, g)
    rungs = ladder.ladder(real, real.mean(0), seed=0)
    df = evaluate(real, {"m": _blobs(30, g)}, [Pooled()], n_repeats=2, ladder=rungs,
                  kid_subset_size=20, ms_ssim_pairs=10, progress=False)
    fd = df[(df.metric == "FD")].set_index("model")
    assert set(fd.kind) == {"model", "reference", "ladder"}
    assert len(fd[fd.kind == "ladder"]) == len(rungs) and (fd.index.str.startswith(LADDER)
                                                            == (fd.kind == "ladder")).all()
    # no anatomy variation scores far worse than a flip (a flipped blob is another blob)
    assert fd.loc["ladder: mean training image + noise σ=0.1", "mean"] > 3 * fd.loc["ladder: flipped", "mean"]
    with pytest.raises(CxrnbError, match="made from real_test"):
        evaluate(real, {"m": real[:30]}, [Pooled()], ladder={"x": real[:10]}, progress=False)
