"""Preprocessing against torchvision / PIL (the paper's pipeline) as the independent reference."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

from cxrnb.data.transforms import equalize, load_grey, preprocess, resize_crop
from cxrnb.errors import CxrnbError


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torchvision's equalize on one small image is 8x slower with threads on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tv_equalize(u8: np.ndarray) -> np.ndarray:
    return TF.equalize(torch.from_numpy(u8)[None])[0].numpy()


def edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    two = np.zeros((40, 40), np.uint8)
    two[:, 20:] = 200                                    # two levels, 800 px each: step 3
    few = np.zeros((10, 10), np.uint8)
    few[0, :3] = (5, 9, 250)                             # 97 px below the last level: step 0
    one_bright = np.zeros((64, 64), np.uint8)
    one_bright[3, 3] = 255
    return {
        "constant": np.full((32, 32), 77, np.uint8),
        "black": np.zeros((16, 16), np.uint8),
        "two_levels": two,
        "step_zero": few,
        "one_bright_pixel": one_bright,
        "uniform": rng.integers(0, 256, (97, 131), dtype=np.uint8),
        "dark_skewed": (rng.beta(0.5, 5, (128, 128)) * 255).astype(np.uint8),
        "narrow_band": rng.integers(100, 104, (50, 60), dtype=np.uint8),
        "saturated_top": np.where(rng.random((80, 80)) < 0.4, 255,
                                  rng.integers(0, 256, (80, 80))).astype(np.uint8),
    }


@pytest.mark.parametrize("name", list(edge_cases()))
def test_equalize_matches_torchvision_and_pil(name):
    u8 = edge_cases()[name]
    ours = equalize(u8)
    assert ours.dtype == np.uint8 and ours.shape == u8.shape
    np.testing.assert_array_equal(ours, tv_equalize(u8))
    np.testing.assert_array_equal(ours, np.asarray(ImageOps.equalize(Image.fromarray(u8))))


def test_equalize_identity_cases_return_a_copy():
    u8 = edge_cases()["constant"]
    out = equalize(u8)
    np.testing.assert_array_equal(out, u8)
    assert out is not u8


def test_equalize_flattens_the_histogram():
    """The point of the operation: the cumulative histogram becomes the uniform one, up to the
    largest single grey level (which no level-to-level map can split)."""
    u8 = np.random.default_rng(0).normal(60, 12, (128, 128)).clip(0, 255).astype(np.uint8)

    def cdf_error(a):
        return np.abs(np.cumsum(np.bincount(a.ravel(), minlength=256)) / a.size
                      - np.arange(1, 257) / 256).max()

    largest_level = np.bincount(u8.ravel()).max() / u8.size
    assert cdf_error(u8) > 0.5
    assert cdf_error(equalize(u8)) <= largest_level


@pytest.mark.real
def test_equalize_is_torchvision_on_every_real_image(real_root):
    files = sorted((real_root / "images").glob("*.png"))
    assert files
    worst = max(int(np.abs(equalize(u).astype(int) - tv_equalize(u)).max())
                for u in map(load_grey, files))
    assert worst == 0


@pytest.mark.real
def test_other_equalizations_are_not_interchangeable(real_root):
    """Why the SPEC pins torchvision's variant: on the 1,657-image subset OpenCV differs from it by
    up to 153 grey levels (median image 6, 99th percentile 50) and scikit-image by up to 154."""
    cv2 = pytest.importorskip("cv2")
    exposure = pytest.importorskip("skimage.exposure")
    cv_worst = sk_worst = 0
    for f in sorted((real_root / "images").glob("*.png")):
        u = load_grey(f)
        ours = equalize(u).astype(int)
        cv_worst = max(cv_worst, np.abs(cv2.equalizeHist(u).astype(int) - ours).max())
        sk = np.rint(exposure.equalize_hist(u, nbins=256) * 255).astype(int)
        sk_worst = max(sk_worst, np.abs(sk - ours).max())
    assert cv_worst > 20 and sk_worst > 20


@pytest.mark.parametrize("shape,size", [((256, 256), 128), ((300, 217), 64), ((217, 300), 100),
                                        ((101, 99), 224), ((64, 64), 64), ((1024, 1024), 224)])
def test_resize_crop_matches_torchvision(shape, size):
    u8 = (np.random.default_rng(size).random(shape) * 255).astype(np.uint8)
    ref = T.Compose([T.Resize(size), T.CenterCrop(size)])(Image.fromarray(u8))
    ours = resize_crop(u8, size)
    assert ours.shape == (size, size)
    np.testing.assert_array_equal(ours, np.asarray(ref))


def reference_pipeline(size: int) -> T.Compose:
    """The paper's torchvision transforms, grey output."""
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.Grayscale(), TF.equalize])


@pytest.mark.parametrize("shape,size", [((300, 217), 64), ((256, 256), 128)])
def test_preprocess_matches_paper_pipeline(shape, size):
    y, x = np.mgrid[: shape[0], : shape[1]]
    noise = np.random.default_rng(1).normal(0, 20, shape)
    u8 = (127 + 60 * np.sin(x / 17) * np.cos(y / 23) + noise).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(preprocess(u8, size),
                                  np.asarray(reference_pipeline(size)(Image.fromarray(u8))))


@pytest.mark.real
def test_preprocess_matches_paper_pipeline_on_real_images(real_root):
    for f in sorted((real_root / "images").glob("*.png"))[:50]:
        with Image.open(f) as img:
            ref = np.asarray(reference_pipeline(128)(img))
        np.testing.assert_array_equal(preprocess(load_grey(f), 128), ref)


def test_load_grey_8bit_roundtrip(tmp_path):
    u8 = (np.random.default_rng(0).random((20, 30)) * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "a.png")
    out = load_grey(tmp_path / "a.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, u8)


def test_load_grey_16bit_scales_by_dtype_range(tmp_path):
    u16 = np.array([[0, 257, 1000, 30000], [40000, 65000, 65534, 65535]], np.uint16)
    Image.fromarray(u16).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    expected = np.floor(u16.astype(float) * 255 / 65535 + 0.5)   # nearest 8-bit level
    np.testing.assert_array_equal(load_grey(tmp_path / "a.png"), expected)


def test_load_grey_keeps_12_bit_data_in_a_16_bit_png_at_256_levels(tmp_path):
    u12 = np.arange(4096, dtype=np.uint16).reshape(64, 64)      # 0..4095, as a DICOM export stores it
    Image.fromarray(u12).save(tmp_path / "a.png")
    out = load_grey(tmp_path / "a.png")
    np.testing.assert_array_equal(out, np.floor(u12.astype(float) * 255 / 4095 + 0.5))
    assert len(np.unique(out)) == 256                           # dividing by 257 would leave 16
    ten = np.array([[0, 1023]], np.uint16)
    Image.fromarray(ten).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_grey(tmp_path / "b.png"), [[0, 255]])


def test_load_grey_rgba_drops_alpha_and_uses_luma(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114])                # ITU-R 601, as PIL documents
    for alpha in (0, 128, 255):
        rgba = np.dstack([rgb, np.full((12, 14), alpha, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"a{alpha}.png")
        out = load_grey(tmp_path / f"a{alpha}.png")
        assert out.shape == (12, 14) and np.abs(out - luma).max() <= 1
    la = np.dstack([rgb[..., 0], np.zeros((12, 14), np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_grey(tmp_path / "la.png"), rgb[..., 0])


def test_load_grey_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(CxrnbError, match="corrupt.png"):
        load_grey(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CxrnbError, match="empty.png"):
        load_grey(tmp_path / "empty.png")


def test_load_grey_truncated_png_is_an_error_not_a_black_image(tmp_path):
    u8 = (np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CxrnbError, match="cut.png"):
        load_grey(tmp_path / "cut.png")
