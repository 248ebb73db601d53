"""The phantom: official layout, labels with CXR14's frequencies, findings visible in the pixels."""

import gzip
import re
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.filters import threshold_otsu

from cxrnb.data import phantom
from cxrnb.data.phantom import draw_chest, write_phantom
from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS, NO_FINDING

# The official label table as torchxrayvision ships it: an independent copy of NIH's file.
XRV_TABLE = Path(find_spec("torchxrayvision").origin).parent / "data/Data_Entry_2017_v2020.csv.gz"


def heart_width(img: np.ndarray) -> float:
    """Width of the bright central band (mediastinum + heart) across the heart's rows, as a
    fraction of the image: pixels above Otsu's threshold in a band 50-62 % of the way down."""
    s = img.shape[0]
    band = img[int(0.50 * s):int(0.62 * s), int(0.15 * s):int(0.85 * s)].astype(float)
    return float((band > threshold_otsu(band)).mean() * 0.7)


def read_rows(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "Data_Entry_2017.csv")


# ----------------------------------------------------------------------------- layout
def test_header_is_the_official_one(phantom_root):
    official = gzip.open(XRV_TABLE, "rt").readline().rstrip("\n")   # the table NIH publishes
    assert (phantom_root / "Data_Entry_2017.csv").open().readline().rstrip("\n") == official


@pytest.mark.real
def test_header_matches_the_real_subset(phantom_root, real_root):
    real = (real_root / "Data_Entry_2017.csv").open().readline().rstrip("\n")
    assert (phantom_root / "Data_Entry_2017.csv").open().readline().rstrip("\n") == real
    assert list(read_rows(phantom_root).columns) == list(read_rows(real_root).columns)


def test_layout_like_the_release(phantom_root):
    df = read_rows(phantom_root)
    files = sorted(p.name for p in (phantom_root / "images").iterdir())
    assert len(df) == 64 and sorted(df["Image Index"]) == files
    for name, pid, fu in zip(df["Image Index"], df["Patient ID"], df["Follow-up #"]):
        assert re.fullmatch(r"\d{8}_\d{3}\.png", name) and name == f"{pid:08d}_{fu:03d}.png"
    with Image.open(phantom_root / "images" / files[0]) as im:
        assert (im.mode, im.size) == ("L", (128, 128))
    assert (df["OriginalImage[Width"] == 128).all() and (df["Height]"] == 128).all()
    assert df["Patient ID"].value_counts().max() > 1, "some patients have follow-ups"
    assert set(df["View Position"]) == {"PA", "AP"} and set(df["Patient Gender"]) == {"M", "F"}
    labels = {lab for s in df["Finding Labels"] for lab in s.split("|")}
    assert labels <= set(FINDINGS) | {NO_FINDING}
    marker = (phantom_root / "PHANTOM").read_text()
    assert marker.count("\n") == 1 and "synthetic phantom" in marker


def test_rows_describe_exactly_what_was_drawn(phantom_root):
    """Re-drawing a row from its CSV fields reproduces the PNG: the labels are the drawn ones."""
    df = read_rows(phantom_root)
    for _, r in df[df["Finding Labels"] != NO_FINDING].head(6).iterrows():
        findings = r["Finding Labels"].split("|")
        img = draw_chest(findings, 128, 0, r["Patient ID"], r["Follow-up #"], r["View Position"],
                         r["Patient Gender"])
        assert np.array_equal(img, np.array(Image.open(phantom_root / "images" / r["Image Index"])))
        fewer = draw_chest(findings[1:], 128, 0, r["Patient ID"], r["Follow-up #"],
                           r["View Position"], r["Patient Gender"])
        assert not np.array_equal(img, fewer)


def test_same_seed_same_bytes(tmp_path):
    a = write_phantom(tmp_path / "a", n=6, size=32, seed=3, progress=False)
    b = write_phantom(tmp_path / "b", n=6, size=32, seed=3, progress=False)
    c = write_phantom(tmp_path / "c", n=6, size=32, seed=4, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 8
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes()
               for f in files if f.suffix == ".png" and (c / f).exists())


# ----------------------------------------------------------------------------- label frequencies
def test_counts_are_cxr14s():
    """The hard-coded counts equal a recount of the official table shipped with torchxrayvision."""
    df = pd.read_csv(XRV_TABLE, usecols=["Finding Labels", "View Position"])
    counts = Counter(lab for s in df["Finding Labels"] for lab in s.split("|"))
    assert dict(counts) == phantom.CXR14_COUNTS
    assert len(df) == phantom.CXR14_IMAGES
    assert (df["Finding Labels"] != NO_FINDING).sum() == phantom.CXR14_ABNORMAL
    assert (df["View Position"] == "PA").mean() == pytest.approx(phantom.P_PA)


def test_sampled_frequencies_match_cxr14():
    rng = np.random.default_rng(0)
    n = 20_000
    draws = [phantom.sample_findings(rng) for _ in range(n)]
    abnormal = [d for d in draws if d]
    p_normal = phantom.CXR14_COUNTS[NO_FINDING] / phantom.CXR14_IMAGES
    assert abs(1 - len(abnormal) / n - p_normal) < 4 * np.sqrt(p_normal * (1 - p_normal) / n)
    counts = Counter(f for d in abnormal for f in d)
    for f in FINDINGS:    # share of abnormal images with f, within 4 binomial sigma of CXR14's
        p = phantom.CXR14_COUNTS[f] / phantom.CXR14_ABNORMAL
        assert abs(counts[f] / len(abnormal) - p) < 4 * np.sqrt(p * (1 - p) / len(abnormal)), f
    mean_count = sum(phantom.CXR14_COUNTS[f] for f in FINDINGS) / phantom.CXR14_ABNORMAL  # 1.57
    assert np.mean([len(d) for d in abnormal]) == pytest.approx(mean_count, abs=0.05)
    assert any(len(d) > 1 for d in abnormal)


# ----------------------------------------------------------------------------- visible findings
@pytest.mark.parametrize("patient", range(1, 7))
def test_cardiomegaly_widens_the_heart(patient):
    normal, big = (draw_chest(f, 128, 0, patient) for f in ((), ("Cardiomegaly",)))
    assert heart_width(big) > 1.15 * heart_width(normal)


def test_cardiomegaly_rows_have_wider_hearts(tmp_path):
    """Measured on the written files, through the CSV: labels and pixels line up."""
    root = write_phantom(tmp_path / "p", n=240, size=64, seed=1, progress=False)
    df = read_rows(root)
    widths = np.array([heart_width(np.array(Image.open(root / "images" / name)))
                       for name in df["Image Index"]])
    big = df["Finding Labels"].str.contains("Cardiomegaly").to_numpy()
    assert big.sum() >= 2
    assert widths[big].mean() > widths[~big].mean() + 2 * widths[~big].std()


# How each finding changes the film where it acts: +1 brighter (denser), -1 darker (more air).
DIRECTION = {f: +1 for f in FINDINGS} | {"Pneumothorax": -1, "Emphysema": -1, "Hernia": -1}


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_is_visible_and_local(finding):
    """Same patient with and without the finding: a clear change of the expected sign, and the
    rest of the film (noise included) identical."""
    for patient in (1, 2):
        a = draw_chest((), 128, 0, patient).astype(int)
        b = draw_chest((finding,), 128, 0, patient).astype(int)
        changed = np.abs(b - a) > 12
        assert changed.sum() >= 10, f"{finding} barely visible"
        assert np.sign((b - a)[changed].mean()) == DIRECTION[finding]
        assert (b == a).mean() > (0.3 if finding == "Emphysema" else 0.6)


def test_emphysema_darkens_and_effusion_whitens_the_lungs():
    s = 128
    columns = np.r_[int(0.2 * s):int(0.35 * s), int(0.65 * s):int(0.8 * s)]    # both lungs
    lungs = (slice(int(0.3 * s), int(0.6 * s)), columns)
    bases = (slice(int(0.55 * s), int(0.68 * s)), columns)
    for patient in (1, 2, 3):
        normal = draw_chest((), s, 0, patient).astype(float)
        assert draw_chest(("Emphysema",), s, 0, patient)[lungs].mean() < normal[lungs].mean() - 10
        assert draw_chest(("Effusion",), s, 0, patient)[bases].mean() > normal[bases].mean() + 5


# ----------------------------------------------------------------------------- bad input, atomicity
@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=-3), dict(size=31), dict(seed=-1)])
def test_bad_parameters(tmp_path, kwargs):
    with pytest.raises(CxrnbError):
        write_phantom(tmp_path / "p", **({"n": 2, "size": 32} | kwargs), progress=False)
    assert not (tmp_path / "p").exists()


def test_bad_finding_or_view():
    with pytest.raises(CxrnbError, match="unknown finding"):
        draw_chest(("Cardiomegally",), 32)
    with pytest.raises(CxrnbError, match="view"):
        draw_chest((), 32, view="LL")


def test_refuses_to_overwrite_other_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CxrnbError, match="not a phantom"):
        write_phantom(tmp_path / "mine", n=2, size=32, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_replaces_an_earlier_phantom(tmp_path):
    write_phantom(tmp_path / "p", n=5, size=32, progress=False)
    write_phantom(tmp_path / "p", n=3, size=32, progress=False)
    assert len(read_rows(tmp_path / "p")) == 3
    assert len(list((tmp_path / "p" / "images").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros((32, 32), np.uint8)

    monkeypatch.setattr(phantom, "draw_chest", failing)
    with pytest.raises(KeyboardInterrupt):
        write_phantom(tmp_path / "p", n=5, size=32, progress=False)
    assert list(tmp_path.iterdir()) == []
