"""Image preprocessing: decode to 8-bit grey, resize the shorter side, centre crop, equalize.

The paper built its pipeline from torchvision transforms (Resize, CenterCrop, Grayscale, then
histogram equalization), so every step here reproduces torchvision's arithmetic exactly; the tests
compare against torchvision itself. Histogram equalization matters most: OpenCV ``equalizeHist``,
scikit-image ``equalize_hist`` and PIL/torchvision ``equalize`` disagree by tens of grey levels on
the same radiograph, so "histogram equalization" alone does not pin down the input the models saw.

``equalize`` is plain numpy (one bincount, one cumsum, one table look-up), max difference 0 from
torchvision on all 1,657 subset images. `python -m cxrnb.bench data`, one CPU thread, 256x256
images: 148 us per image here vs 282 us for torchvision's tensor ``equalize``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from cxrnb.errors import CxrnbError

# Bumped whenever the arithmetic below changes, so caches built by older code are never reused.
PREP_VERSION = "grey8-bitdepth-resize-bilinear-centrecrop-equalize-v2"

# PIL's default, stated here because a library that flips it would let truncated PNGs decode
# silently as partly black images; we want such files reported instead.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# What the cache leaves out (with a warning naming the file), beside files that do not decode.
# Pixels: PIL's default MAX_IMAGE_PIXELS (89,478,485, about 9,459 x 9,459), fixed here so that a
# library changing it changes nothing; radiographs are at most ~4,300 x 4,300 px, and a 20,000 x
# 20,000 PNG ("decompression bomb") would take 400 MB of memory per worker to decode.
MAX_PIXELS = 89_478_485
MIN_SIDE = 32           # px: below this a "radiograph" has no anatomy left to learn from
MAX_ASPECT = 8.0        # longer side / shorter side: a 1024 x 1 strip centre-cropped is a smeared line


class UnusableImage(CxrnbError):
    """An image the cache cannot use; ``reason`` is the short form the cache's warning lists."""

    def __init__(self, path: str | Path, reason: str, advice: str = "re-download or delete the file"):
        super().__init__(f"image {path} {reason}; {advice}")
        self.path, self.reason = Path(path), reason


def load_grey(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 greyscale (H, W).

    8-bit L is read as is. RGB/RGBA/LA/P are converted with PIL's ITU-R 601 luma (alpha dropped).
    Greyscale of more than 8 bits (``I;16``, ``I``) is scaled by the range of its bit depth, not
    min-max: the depth is the smallest of 10, 12, 14 and 16 bits that holds the image's maximum, so
    12-bit data stored in a 16-bit PNG (values 0-4095, common in DICOM exports) keeps 256 grey levels
    instead of the 16 that dividing by 257 would leave. A file that does not decode, or has more
    than ``MAX_PIXELS`` (read from its header, before decoding), is an ``UnusableImage``.
    """
    try:
        with warnings.catch_warnings():             # PIL warns from MAX_IMAGE_PIXELS; _check_pixels refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_pixels(path, *img.size)          # from the header, before a single pixel is decoded
            img.load()   # decode now: a truncated file fails here, not later in a worker
            if img.mode.startswith("I"):
                a = np.asarray(img).astype(np.float64)
                return np.clip(np.rint(a * 255.0 / bit_range(a.max())), 0, 255).astype(np.uint8)
            return np.asarray(img if img.mode == "L" else img.convert("L")).copy()
    except Image.DecompressionBombError as e:     # over twice PIL's own limit, refused by PIL itself
        raise UnusableImage(path, f"is refused by PIL as a decompression bomb ({e})",
                            "downscale it, or leave it out") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnusableImage(path, f"cannot be decoded ({e})") from e


def _check_pixels(path: str | Path, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise UnusableImage(path, f"has {w} x {h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,}",
                            "downscale it, or leave it out")


def check_shape(path: str | Path, h: int, w: int) -> None:
    """Refuse an image too small or too thin to be a radiograph (``MIN_SIDE``, ``MAX_ASPECT``)."""
    if min(h, w) < MIN_SIDE:
        raise UnusableImage(path, f"is {w} x {h} px, a side under {MIN_SIDE} px", "leave it out")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise UnusableImage(path, f"is {w} x {h} px, an aspect ratio beyond 1:{MAX_ASPECT:g}", "leave it out")


def bit_range(peak: float) -> int:
    """2**bits - 1 for the smallest of 10, 12, 14, 16 bits holding ``peak`` (8-bit data stored wide: 255)."""
    for bits in (8, 10, 12, 14, 16):
        if peak <= 2 ** bits - 1:
            return 2 ** bits - 1
    return 2 ** 16 - 1


def equalize(u8: np.ndarray) -> np.ndarray:
    """Histogram equalization with torchvision ``functional.equalize`` (= PIL ``ImageOps.equalize``)
    semantics, bit for bit.

    step = (pixels outside the last occupied grey level) // 255; grey level g maps to
    (pixels below g + step // 2) // step, clipped to 255. A flat or two-level-degenerate image
    (step == 0) is returned unchanged.
    """
    hist = np.bincount(u8.ravel(), minlength=256)
    occupied = hist[hist > 0]
    step = int(occupied[:-1].sum()) // 255
    if step == 0:
        return u8.copy()
    below = np.concatenate(([0], np.cumsum(hist)[:-1]))
    lut = np.minimum((below + step // 2) // step, 255).astype(np.uint8)
    return np.take(lut, u8)


def output_size(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``: the shorter side becomes ``size``, the longer is scaled and
    truncated (int), as ``_compute_resized_output_size`` does."""
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize_crop(u8: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (PIL bilinear, which antialiases when shrinking, as
    torchvision ``Resize`` does on PIL images), then centre crop ``size`` x ``size``."""
    h, w = u8.shape
    nh, nw = output_size(h, w, size)
    if (nh, nw) != (h, w):
        u8 = np.asarray(Image.fromarray(u8, "L").resize((nw, nh), Image.BILINEAR))
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.ascontiguousarray(u8[top:top + size, left:left + size])


def preprocess(u8: np.ndarray, size: int) -> np.ndarray:
    """The paper's order: resize, centre crop, (grey: already), equalize."""
    return equalize(resize_crop(u8, size))


def load_preprocessed(path: str | Path, size: int) -> np.ndarray:
    """Decode, check (``check_shape``) and preprocess one file: what the cache stores per image."""
    u8 = load_grey(path)
    check_shape(path, *u8.shape)
    return preprocess(u8, size)


def why_unusable(path: str | Path, size: int) -> str:
    """Why ``load_preprocessed`` refuses ``path`` (what the cache's warning says of it), or ""."""
    try:
        load_preprocessed(path, size)
    except UnusableImage as e:
        return e.reason
    return ""
