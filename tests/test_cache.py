"""The preprocessed cache (build, reuse, resume, refusal) and the loaders that read it."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from cxrnb.data import cache as cache_mod
from cxrnb.data.cache import ArrayLoader, ImageCache, prepare
from cxrnb.data.index import label_matrix
from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
          "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
N, SIZE = 24, 16


def write_dataset(root, n=N, seed=0):
    """n small radiograph-like PNGs of mixed shapes for n // 2 patients, in the official layout."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 48), (48, 40), (45, 45)]
    lines = [HEADER]
    (root / "images").mkdir(parents=True)
    for i in range(n):
        h, w = shapes[i % 3]
        y, x = np.mgrid[:h, :w]
        img = 100 + 80 * np.sin(x / (3 + i % 5)) * np.cos(y / 7) + rng.normal(0, 15, (h, w))
        name = f"{i // 2 + 1:08d}_{i % 2:03d}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / name)
        labels = "|".join(rng.choice(LABELS[:-1], rng.integers(1, 3), replace=False)) \
            if i % 3 else "No Finding"
        lines.append(f"{name},{labels},{i % 2},{i // 2 + 1},40,M,PA,{w},{h},0.1,0.1")
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return root


def reference(path, size):
    """The paper's torchvision pipeline on the file: the independent reference for every row."""
    pipeline = T.Compose([T.Resize(size), T.CenterCrop(size), T.Grayscale(), TF.equalize])
    with Image.open(path) as img:
        return np.asarray(pipeline(img))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    return prepare(tiny, size=SIZE, workers=1, cache_dir=tmp_path_factory.mktemp("cache"),
                   progress=False)


def build(root, cache_dir, **kw):
    return prepare(root, **{"size": SIZE, "workers": 1, "cache_dir": cache_dir, "progress": False,
                            **kw})


# ---------------------------------------------------------------- building

def test_cache_holds_the_torchvision_pipeline(built, tiny):
    assert len(built) == N and built.images.shape == (N, SIZE, SIZE)
    assert built.images.dtype == np.uint8
    for row, path in zip(built.index["row"], built.index["path"]):
        np.testing.assert_array_equal(built.images[row], reference(path, SIZE))
    table = pd.read_csv(tiny / "Data_Entry_2017.csv")
    assert list(built.index["image"]) == list(table["Image Index"])
    np.testing.assert_array_equal(built.labels[built.index["row"]], label_matrix(built.index))
    assert built.meta["n_images"] == N and built.meta["failed"] == []
    assert built.source == "real CXR14 subset"
    assert sorted(p.name for p in built.path.iterdir()) == ["images.u8", "index.csv", "meta.json"]


def test_parallel_build_is_identical(tiny, built, tmp_path):
    two = build(tiny, tmp_path, workers=2)
    assert two.path.name == built.path.name
    np.testing.assert_array_equal(np.asarray(two.images), np.asarray(built.images))


def test_complete_cache_is_reused_without_decoding(tiny, built, monkeypatch):
    def no_work(job):
        raise AssertionError("a complete cache was rebuilt")
    monkeypatch.setattr(cache_mod, "_work", no_work)
    again = build(tiny, built.path.parent)
    assert again.path == built.path


def test_other_settings_get_another_cache(tiny, built, tmp_path):
    other_size = build(tiny, built.path.parent, size=SIZE + 4)
    assert other_size.path != built.path and other_size.images.shape[1:] == (SIZE + 4, SIZE + 4)
    table = pd.read_csv(tiny / "Data_Entry_2017.csv")
    table.head(10).to_csv(tmp_path / "part.csv", index=False)
    fewer = build(tiny, built.path.parent, csv=tmp_path / "part.csv")
    assert fewer.path != built.path and len(fewer) == 10
    copy = shutil.copytree(tiny, tmp_path / "copy")
    assert build(copy, built.path.parent).path != built.path        # another source folder


def test_corrupt_and_truncated_images_are_skipped_and_reported(tmp_path):
    root = write_dataset(tmp_path / "data")
    names = sorted(p.name for p in (root / "images").iterdir())
    (root / "images" / names[3]).write_bytes(b"not a png at all")
    whole = (root / "images" / names[7]).read_bytes()
    (root / "images" / names[7]).write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match="2 image"):
        c = build(root, tmp_path / "cache")
    assert sorted(c.meta["failed"]) == [names[3], names[7]] and c.meta["n_failed"] == 2
    assert len(c) == N - 2 and not set(c.meta["failed"]) & set(c.index["image"])
    for row, path in zip(c.index["row"], c.index["path"]):      # rows still point at their image
        np.testing.assert_array_equal(c.images[row], reference(path, SIZE))
    assert c.labels[c.index["row"]].sum() == label_matrix(c.index).sum()


def test_a_cache_dir_that_is_a_file_is_one_line(tiny, tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(CxrnbError, match=r"taken is a file, not a folder; pass another --cache-dir"):
        build(tiny, tmp_path / "taken")
    with pytest.raises(CxrnbError, match=r"taken is a file"):
        build(tiny, tmp_path / "taken" / "deeper")


def test_a_full_disk_is_refused_before_the_memory_map_and_named_while_writing(tiny, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))
    with pytest.raises(CxrnbError, match=r"disk full: the cache needs \d+ MiB in .*, 10 MiB are free"):
        build(tiny, tmp_path / "c1")
    assert not list((tmp_path / "c1").glob("*/images.u8"))      # refused before the file exists
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", real)

    # the disk fills while the index is written (through paths.atomic, as every cache write is): the
    # pixels already built are kept for the resume, not deleted with a failed build; a full quota too
    write = Path.write_text
    for code in (errno.ENOSPC, errno.EDQUOT):
        def no_space(self, *a, code=code, **k):
            if "index" in self.name:
                raise OSError(code, "No space left on device", str(self))
            return write(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", no_space)
        full = r"no space left on the disk writing .*c2-\d+/.*index\S* \(\d+ MB free\): free space or pass "
        with pytest.raises(CxrnbError, match=full + "another --cache-dir; run again to resume the build$"):
            build(tiny, tmp_path / f"c2-{code}")
        assert list((tmp_path / f"c2-{code}").glob("*/images.u8"))         # kept for the resume


def test_all_images_unreadable_is_an_error(tmp_path):
    root = write_dataset(tmp_path / "data", n=4)
    for p in (root / "images").iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(CxrnbError, match="none of the 4 images"):
        build(root, tmp_path / "cache")


def test_interrupted_build_resumes_where_it_stopped(tiny, built, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    real_work, seen = cache_mod._work, []

    def interrupted(job):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(len(job[0]))
        return real_work(job)

    monkeypatch.setattr(cache_mod, "_work", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tiny, tmp_path)
    (half,) = tmp_path.iterdir()
    assert not (half / "meta.json").exists()
    assert (np.load(half / "state.npy") == cache_mod.DONE).sum() == 8
    with pytest.raises(CxrnbError, match="not a complete image cache"):
        ImageCache(half)

    def counted(job):
        seen.append(len(job[0]))
        return real_work(job)

    seen.clear()
    monkeypatch.setattr(cache_mod, "_work", counted)
    done = build(tiny, tmp_path)
    assert sum(seen) == N - 8                                     # only the rest was decoded
    np.testing.assert_array_equal(np.asarray(done.images), np.asarray(built.images))


# ---------------------------------------------------------------- refusing stale caches

@pytest.fixture
def copied(built, tmp_path):
    """A copy of the built cache under its own key name, to tamper with."""
    return shutil.copytree(built.path, tmp_path / built.path.name)


def edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, **changes}))


@pytest.mark.parametrize("changes", [{"size": SIZE + 1}, {"version": "older-code"},
                                     {"root": "/elsewhere"}, {"rows_hash": "0" * 64}])
def test_meta_not_matching_its_key_is_refused(copied, changes):
    ImageCache(copied)                                             # the copy itself is fine
    edit_meta(copied, **changes)
    with pytest.raises(CxrnbError, match="does not match its settings"):
        ImageCache(copied)


def test_renamed_truncated_or_garbled_cache_is_refused(copied, tmp_path):
    renamed = copied.rename(tmp_path / "0123456789abcdef")
    with pytest.raises(CxrnbError, match="does not match its settings"):
        ImageCache(renamed)
    fresh = shutil.copytree(renamed, copied)
    with open(fresh / "images.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CxrnbError, match="does not match its settings"):
        ImageCache(fresh)
    (renamed / "meta.json").write_text("{ half written")
    with pytest.raises(CxrnbError, match="does not match its settings"):
        ImageCache(renamed)


def test_prepare_refuses_an_edited_cache_in_its_place(tiny, built, tmp_path):
    cache_dir = tmp_path / "c"
    shutil.copytree(built.path, cache_dir / built.path.name)
    edit_meta(cache_dir / built.path.name, n_rows=N + 1)
    with pytest.raises(CxrnbError, match="delete it and run `cxrnb prepare` again"):
        build(tiny, cache_dir)


# ---------------------------------------------------------------- ArrayLoader

def numbered(n=50, s=3):
    """Images whose pixels and labels encode their own row, so any batch can be checked."""
    images = np.repeat(np.arange(n, dtype=np.uint8), s * s).reshape(n, s, s)
    labels = np.zeros((n, 15), np.float32)
    labels[:, 0] = np.arange(n)
    return images, labels


def batches(it):
    return [(u.clone(), y.clone()) for u, y in it]


def test_loader_batches_shape_alignment_and_coverage():
    images, labels = numbered()
    loader = ArrayLoader(images, labels, batch_size=8, drop_last=False)
    assert len(loader) == 7 and len(ArrayLoader(images, labels, batch_size=8)) == 6
    seen = []
    for u, y in loader.epoch_batches(0):
        assert u.dtype == torch.uint8 and u.shape[1:] == (1, 3, 3) and y.dtype == torch.float32
        assert torch.equal(u[:, 0, 0, 0].float(), y[:, 0])            # pixels and labels agree
        seen += y[:, 0].int().tolist()
    assert sorted(seen) == list(range(50))                           # each row exactly once


def test_loader_is_deterministic_per_seed_and_epoch():
    images, labels = numbered()
    a = ArrayLoader(images, labels, batch_size=8, seed=3)
    b = ArrayLoader(images, labels, batch_size=8, seed=3)

    def order(loader, epoch):
        return [y[:, 0].tolist() for _, y in loader.epoch_batches(epoch)]

    assert order(a, 0) == order(b, 0) and order(a, 5) == order(b, 5)
    assert order(a, 0) != order(a, 1)
    assert order(a, 0) != order(ArrayLoader(images, labels, batch_size=8, seed=4), 0)
    assert [y[:, 0].tolist() for _, y in a] == order(a, 0)           # plain iteration: epoch 0,
    assert [y[:, 0].tolist() for _, y in a] == order(a, 1)           # then epoch 1


@pytest.mark.parametrize("start", [0, 1, 4, 6])
def test_epoch_batches_from_start_is_the_tail(start):
    images, labels = numbered()
    loader = ArrayLoader(images, labels, batch_size=8, seed=1)
    full, tail = batches(loader.epoch_batches(2)), batches(loader.epoch_batches(2, start))
    assert len(tail) == len(full) - start
    for (u1, y1), (u2, y2) in zip(full[start:], tail):
        assert torch.equal(u1, u2) and torch.equal(y1, y2)


def test_loader_rows_and_no_shuffle():
    images, labels = numbered()
    rows = np.array([3, 10, 11, 20, 40, 41])
    loader = ArrayLoader(images, labels, batch_size=2, shuffle=False, rows=rows)
    assert [y[:, 0].int().tolist() for _, y in loader] == [[3, 10], [11, 20], [40, 41]]
    shuffled = ArrayLoader(images, labels, batch_size=3, rows=rows)
    assert sorted(sum((y[:, 0].int().tolist() for _, y in shuffled), [])) == rows.tolist()


# ---------------------------------------------------------------- ImageCache views

def test_rows_splits_and_subsets(built):
    parts = {s: built.rows(s) for s in ("train", "val", "test")}
    assert sorted(np.concatenate(list(parts.values()))) == sorted(built.rows())
    by_row = built.index.set_index("row")["patient"]
    patients = [set(by_row[parts[s]]) for s in parts]
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1:])
    sub = built.rows("train", max_images=5, seed=1)
    assert len(sub) == 5 and set(sub) <= set(parts["train"])
    np.testing.assert_array_equal(sub, built.rows("train", max_images=5, seed=1))
    with pytest.raises(CxrnbError, match="valid splits"):
        built.rows("validation")
    with pytest.raises(CxrnbError, match="max_images"):
        built.rows("train", max_images=0)


def test_loader_and_provenance_of_a_split(built):
    loader = built.loader("train", batch_size=4, seed=2)
    u, y = next(iter(loader))
    assert u.shape == (4, 1, SIZE, SIZE)
    rows = np.sort(np.random.default_rng([2, 0]).permutation(built.rows("train"))[:4])
    assert torch.equal(u[:, 0], torch.from_numpy(np.asarray(built.images[rows])))
    with pytest.raises(CxrnbError, match="fewer than one batch"):
        built.loader("val", batch_size=64)
    prov = built.provenance(epochs=2, seed=2, extra={"beta": 0.1})
    assert (prov.source, prov.n_images, prov.image_size) == ("real CXR14 subset",
                                                              len(built.rows("train")), SIZE)
    assert built.provenance(split=None).n_images == N


def test_phantom_is_labelled_as_such(phantom_root, tmp_path):
    c = prepare(phantom_root, size=32, workers=1, cache_dir=tmp_path, progress=False)
    assert c.source == "synthetic phantom" and len(c) == 64


# ---------------------------------------------------------------- the real subset

@pytest.fixture(scope="session")
def real_cache(real_root, tmp_path_factory):
    return prepare(real_root, size=64, workers=2, cache_dir=tmp_path_factory.mktemp("real"),
                   progress=False)


@pytest.mark.real
def test_real_subset_cache(real_cache):
    c = real_cache
    assert c.meta["failed"] == [] and len(c) == c.meta["n_rows"]
    if len(c) == 1_657:
        assert c.source == "real CXR14 subset"
    shares = c.index["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.02)
    for i in np.random.default_rng(0).choice(len(c), 25, replace=False):
        row, path = c.index["row"][i], c.index["path"][i]
        np.testing.assert_array_equal(c.images[row], reference(path, 64))
    u, y = next(iter(c.loader("train")))
    assert u.shape == (64, 1, 64, 64) and y.sum() >= 64          # every image has a label


def test_data_benchmark_reports_consistent_numbers(tiny, capsys):
    from cxrnb.bench.data import main

    before = torch.get_num_threads()
    try:
        out = main(root=tiny, size=SIZE, batch_size=8, naive_images=N, min_seconds=0.05)
    finally:
        torch.set_num_threads(before)
    assert all(v > 0 for v in out.values())
    assert out["speedup"] == pytest.approx(out["cached"] / out["naive"])
    assert "cache / naive" in capsys.readouterr().out


def test_data_benchmark_without_data_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CXR14_ROOT"}
    done = subprocess.run([sys.executable, "-m", "cxrnb.bench", "data"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "error: no CXR14 folder given" in lines[0], done.stderr


# ---------------------------------------------------------------- image bombs and degenerate images

def add_image(root, name, array):
    """One more image in the dataset's folder and table (a copy of the first row's labels)."""
    Image.fromarray(array).save(root / "images" / name)
    table = root / "Data_Entry_2017.csv"
    first = table.read_text().splitlines()[1].split(",", 1)[1]
    table.write_text(table.read_text() + f"{name},{first}\n")


def test_images_over_the_pixel_limit_are_left_out_by_name(tmp_path, monkeypatch):
    from cxrnb.data import transforms

    root = write_dataset(tmp_path / "data")
    add_image(root, "00000099_000.png", np.full((200, 150), 90, np.uint8))
    monkeypatch.setattr(transforms, "MAX_PIXELS", 100 * 100)     # rather than writing a 20000 x 20000 PNG
    with pytest.warns(UserWarning, match=r"1 image\(s\) left out .*: 00000099_000.png has 150 x 200 = 30,000 "
                                         r"pixels, over the limit of 10,000"):
        c = build(root, tmp_path / "cache")
    assert len(c) == N and c.meta["failed"] == ["00000099_000.png"]
    assert "over the limit" in c.meta["reasons"]["00000099_000.png"]


def test_pils_own_decompression_bomb_error_is_caught_and_named(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "data")
    add_image(root, "00000099_000.png", np.full((100, 100), 90, np.uint8))
    # PIL raises DecompressionBombError past twice its limit (10,000 > 2 x 4,000); the dataset's own
    # 40 x 48 images only get its warning, which is not ours to show.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000)
    with pytest.warns(UserWarning, match=r"00000099_000.png is refused by PIL as a decompression bomb"):
        c = build(root, tmp_path / "cache")
    assert len(c) == N and c.meta["failed"] == ["00000099_000.png"]


@pytest.mark.parametrize("shape, reason", [((1, 1024), "is 1024 x 1 px, a side under 32 px"),
                                           ((1024, 1), "is 1 x 1024 px, a side under 32 px"),
                                           ((20, 40), "is 40 x 20 px, a side under 32 px"),
                                           ((40, 400), "is 400 x 40 px, an aspect ratio beyond 1:8")])
def test_images_too_small_or_thin_are_left_out_by_name(tmp_path, shape, reason):
    root = write_dataset(tmp_path / "data", n=6)
    add_image(root, "00000099_000.png", np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    with pytest.warns(UserWarning, match=f"00000099_000.png {reason}"):
        c = build(root, tmp_path / "cache")
    assert len(c) == 6 and c.meta["reasons"] == {"00000099_000.png": reason}


def test_a_build_that_fails_for_good_leaves_no_half_built_folder(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "data", n=4)
    for p in (root / "images").iterdir():
        p.write_bytes(b"broken")
    with pytest.raises(CxrnbError, match=r"none of the 4 images .* could be used \(e\.g\. 00000001_000.png "
                                         r"cannot be decoded"):
        build(root, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())

    def bug(job):
        raise RuntimeError("a bug in a worker")
    monkeypatch.setattr(cache_mod, "_work", bug)
    with pytest.raises(RuntimeError, match="a bug in a worker"):
        build(write_dataset(tmp_path / "other"), tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_cli_prepare_leaves_a_bomb_out_with_a_warning_not_a_traceback(tmp_path, monkeypatch, capsys):
    from cxrnb.cli import main
    from cxrnb.data import transforms

    root = write_dataset(tmp_path / "data", n=6)
    add_image(root, "00000099_000.png", np.full((200, 200), 90, np.uint8))
    monkeypatch.setattr(transforms, "MAX_PIXELS", 100 * 100)
    with pytest.warns(UserWarning, match="00000099_000.png has 200 x 200"):
        main(["prepare", "--root", str(root), "--size", str(SIZE), "--workers", "1",
              "--cache-dir", str(tmp_path / "cache")])
    assert "6 images" in capsys.readouterr().out
