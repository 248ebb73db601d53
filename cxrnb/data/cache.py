"""The preprocessed image cache: decode and preprocess every image once, then train from a memmap.

Decoding a radiograph PNG, resizing and equalizing it costs milliseconds; reading the finished
S x S uint8 row back from a memory-mapped file costs microseconds. So ``prepare`` pays the cost
once per (folder, image list, size, preprocessing version), and every epoch after that is a copy.

Layout of ``cache_dir/<key>/`` (key = hash of those four settings, so a different request can never
pick up a cache built for another):

- ``images.u8``  uint8 (rows, S, S), row i = image i of the build's index
- ``state.npy``  build progress per row (pending / done / failed); exists only while building, so
  an interrupted build resumes where it stopped
- ``index.csv``  the usable rows (undecodable images left out); column ``row`` = row in images.u8
- ``meta.json``  settings, counts, names of the images left out and why; written last, atomically:
  a cache is complete exactly when it has one

Left out, with a warning naming each file: images that do not decode, have more pixels than
``transforms.MAX_PIXELS``, or are too small or thin to be radiographs (``transforms.check_shape``).
An interrupted build (Ctrl-C, a signal, a full disk) keeps its folder and resumes; any other
failure removes it, so no half-built cache is left behind.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import shutil
import time
import warnings
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrnb.data.index import data_source, label_matrix, load_index, resolve_root, split_by_patient
from cxrnb.data.transforms import PREP_VERSION, load_preprocessed, why_unusable
from cxrnb.errors import CxrnbError, DiskFullError
from cxrnb.labels import LABELS
from cxrnb.paths import CACHE_DIR, DISK_FULL_ERRNOS, atomic, disk_full_error, in_repo, write_text
from cxrnb.provenance import Provenance

CHUNK = 64              # images per worker task
NAMED = 10              # left-out images the warning names (meta.json lists them all)
FLUSH_SECONDS = 2.0     # how often build progress is made durable
PENDING, DONE, FAILED = 0, 1, 2
# The index columns that define what a cache row holds (the path follows from the root).
KEY_COLUMNS = ["image", "labels", "follow_up", "patient", "age", "sex", "view"]
META_FIELDS = ("root", "rows_hash", "size", "version", "n_rows", "n_images", "source")


class Split(StrEnum):
    """The patient-level splits (``split_by_patient``); the plain strings "train", "val" and
    "test" are accepted wherever a split is."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


def cache_key(root: str, rows_hash: str, size: int, version: str) -> str:
    """The cache folder name for a source folder, image list, size and preprocessing version."""
    blob = json.dumps([str(root), rows_hash, int(size), version]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _rows_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(df[KEY_COLUMNS].to_csv(index=False).encode()).hexdigest()


def _save_state(path: Path, state: np.ndarray) -> None:
    with atomic(path) as tmp:
        np.save(tmp, state)


def _work(job: tuple[list[str], int]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess one chunk of files (in a worker); undecodable files give ok=False, not a crash."""
    paths, size = job
    out = np.zeros((len(paths), size, size), np.uint8)
    ok = np.ones(len(paths), bool)
    for i, p in enumerate(paths):
        try:
            out[i] = load_preprocessed(p, size)
        except CxrnbError:
            ok[i] = False
    return out, ok


def _make_dir(path: Path) -> None:
    """``path`` and its parents, or one line saying which part of it is in the way."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise CxrnbError(f"cannot put the cache in {path}: {parent} is a file, not a folder; "
                             "pass another --cache-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CxrnbError(f"cannot create the cache folder {path}: {e.strerror}") from None


def _check_space(path: Path, need: int, margin: int = 64 << 20) -> None:
    """Refuse before writing: a memory-mapped file on a full disk dies with SIGBUS ("Bus error"),
    not with an exception anyone could catch."""
    free = shutil.disk_usage(path).free
    if free < need + margin:
        raise CxrnbError(f"disk full: the cache needs {(need + margin) / 2**20:,.0f} MiB in {path}, "
                         f"{free / 2**20:,.0f} MiB are free; free space or pass another --cache-dir")


def _build(path: Path, df: pd.DataFrame, size: int, workers: int, progress: bool) -> np.ndarray:
    """Fill images.u8 for every pending row; returns the per-row state."""
    n = len(df)
    images_file, state_file = path / "images.u8", path / "state.npy"
    if state_file.is_file():
        state = np.load(state_file)
        if len(state) != n or images_file.stat().st_size != n * size * size:
            raise CxrnbError(f"half-built cache {path} does not match its settings, so it was removed: "
                             "run `cxrnb prepare` again")
        images = np.memmap(images_file, np.uint8, "r+", shape=(n, size, size))
    else:
        _make_dir(path)
        _check_space(path, n * size * size)
        images = np.memmap(images_file, np.uint8, "w+", shape=(n, size, size))
        state = np.zeros(n, np.uint8)
        _save_state(state_file, state)
    todo = np.flatnonzero(state == PENDING)
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    jobs = ((df["path"].iloc[c].astype(str).tolist(), size) for c in chunks)
    bar = tqdm(total=n, initial=n - len(todo), unit="img", desc=f"cache {size}px",
               disable=not progress)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    last = time.monotonic()
    try:
        for rows, (block, ok) in zip(chunks, pool.imap(_work, jobs) if pool else map(_work, jobs)):
            images[rows] = block
            state[rows] = np.where(ok, DONE, FAILED)
            bar.update(len(rows))
            if time.monotonic() - last > FLUSH_SECONDS:
                images.flush()               # pixels on disk before the rows are marked done
                _save_state(state_file, state)
                last = time.monotonic()
    finally:
        images.flush()
        _save_state(state_file, state)
        bar.close()
        if pool:
            pool.terminate()
    return state


def prepare(root: str | Path | None = None, csv: str | Path | None = None, size: int = 128,
            workers: int = 2, cache_dir: str | Path = CACHE_DIR, on_missing: str = "skip",
            progress: bool = True, split_seed: int = 0) -> ImageCache:
    """Build (or resume, or just open) the cache of ``root``'s images at ``size`` px.

    Images that cannot be used are left out, named with the reason in meta.json and in a warning;
    the build goes on (module docstring). Returns the opened ``ImageCache`` (patient split drawn with ``split_seed``).
    """
    if size < 1 or workers < 1:
        raise CxrnbError(f"size and workers must be positive, not size={size}, workers={workers}")
    root = resolve_root(root).resolve()
    df = load_index(root, csv, on_missing)
    rows_hash = _rows_hash(df)
    path = in_repo(cache_dir) / cache_key(str(root), rows_hash, size, PREP_VERSION)
    if not (path / "meta.json").is_file():
        try:
            _finish(path, df, root, csv, rows_hash, size, workers, progress)
        except BaseException as e:
            # a full disk or quota, from our own writes (paths.atomic says DiskFullError) or a library's
            full = isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS)
            if not (full or isinstance(e, KeyboardInterrupt)):     # failed for good, not interrupted:
                shutil.rmtree(path, ignore_errors=True)             # no half-built cache is left
            if full:
                raise disk_full_error(getattr(e, "filename", None) or path, advice="free space or pass another "
                                      "--cache-dir; run again to resume the build") from None
            raise
    return ImageCache(path, split_seed=split_seed)


def _finish(path: Path, df: pd.DataFrame, root: Path, csv, rows_hash: str, size: int, workers: int,
            progress: bool) -> None:
    """Build the cache's pixels, then write its index and meta.json (which mark it complete)."""
    state = _build(path, df, size, workers, progress)
    good = state == DONE
    failed = df["image"][state == FAILED].tolist()
    if not good.any():
        raise CxrnbError(f"none of the {len(df):,} images in {root} could be used (e.g. "
                         f"{df['image'].iloc[0]} {why_unusable(df['path'].iloc[0], size)}): check the files, "
                         "then prepare again")
    reasons = {name: why_unusable(p, size) for name, p in zip(failed, df["path"][state == FAILED].astype(str))}
    if failed:
        named = "; ".join(f"{name} {why}" for name, why in list(reasons.items())[:NAMED])
        warnings.warn(f"{len(failed)} image(s) left out (listed in {path / 'meta.json'}; delete that "
                      f"folder to retry them): {named}"
                      + (f"; and {len(failed) - NAMED} more" if len(failed) > NAMED else ""), stacklevel=3)
    index = df[good].assign(row=np.flatnonzero(good), path=df["path"][good].astype(str))
    write_text(path / "index.csv", index.to_csv(index=False))
    meta = {"key": path.name, "version": PREP_VERSION, "root": str(root),
            "csv": None if csv is None else str(Path(csv).resolve()), "rows_hash": rows_hash,
            "size": size, "n_rows": len(df), "n_images": int(good.sum()),
            "n_failed": len(failed), "failed": failed, "reasons": reasons,
            "source": data_source(root, n_images=len(df))}
    write_text(path / "meta.json", json.dumps(meta, indent=2) + "\n")
    (path / "state.npy").unlink()


class ArrayLoader:
    """Batches ``(u8 (B,1,S,S) uint8, y (B,15) float32)`` straight from a uint8 array or memmap.

    No decoding and no worker processes: a batch is one sorted fancy-index into the array (sorted so
    a memmap reads forward). Batch b of epoch e depends only on (seed, e, b), so training can stop
    mid-epoch and resume with ``epoch_batches(e, b)`` exactly. ``rows`` restricts it to a subset.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 64,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rows: np.ndarray | None = None):
        self.images, self.labels = images, np.asarray(labels, np.float32)
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, np.int64)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed = seed
        self.epoch = 0   # the epoch the next plain iteration yields
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> ArrayLoader:
        """This loader as process ``rank`` of ``world_size`` sees it: the same global batches (same
        seeded order on every rank), each cut into ``world_size`` equal consecutive slices, of
        which it yields slice ``rank``. ``batch_size`` stays the global batch."""
        if self.batch_size % world_size:
            raise CxrnbError(f"batch_size {self.batch_size} does not split over {world_size} processes; "
                             f"use a multiple of {world_size} (batch_size is the global batch)")
        out = copy.copy(self)
        out.rank, out.world_size = rank, world_size
        return out

    def __len__(self) -> int:
        n, b = len(self.rows), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """The rows of one epoch, in the order they are batched."""
        if not self.shuffle:
            return self.rows
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

    def epoch_batches(self, epoch: int, start: int = 0):
        """Batches ``start``, ``start+1``, ... of ``epoch``."""
        order, b = self.order(epoch), self.batch_size
        for i in range(start, len(self)):
            idx = np.sort(order[i * b:(i + 1) * b])
            if self.world_size > 1:
                share = len(idx) // self.world_size
                idx = idx[self.rank * share:(self.rank + 1) * share]
            u8 = torch.from_numpy(np.ascontiguousarray(self.images[idx])).unsqueeze(1)
            yield u8, torch.from_numpy(self.labels[idx])

    def __iter__(self):
        """A full epoch; each plain iteration moves on to the next epoch, as a DataLoader does."""
        self.epoch += 1
        return self.epoch_batches(self.epoch - 1)


class ImageCache:
    """A complete cache folder, opened read-only and checked against its own key.

    ``index`` lists the usable images with their ``row`` in ``images`` and a patient ``split``;
    ``labels`` is the (rows, 15) multi-hot matrix aligned with ``images``.
    """

    def __init__(self, path: str | Path, split_seed: int = 0,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise CxrnbError(f"{self.path} is not a complete image cache: run `cxrnb prepare` "
                             "(it resumes an interrupted build)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError:
            meta = {}
        images_file = self.path / "images.u8"
        if not (all(f in meta for f in META_FIELDS)
                and meta["version"] == PREP_VERSION
                and cache_key(meta["root"], meta["rows_hash"], meta["size"],
                              meta["version"]) == self.path.name
                and images_file.is_file()
                and images_file.stat().st_size == meta["n_rows"] * meta["size"] ** 2):
            raise CxrnbError(f"cache {self.path} does not match its settings (stale, edited or "
                             "from older code): delete it and run `cxrnb prepare` again")
        self.meta, size, n_rows, n_images = meta, meta["size"], meta["n_rows"], meta["n_images"]
        index = pd.read_csv(self.path / "index.csv")
        if len(index) != n_images:
            raise CxrnbError(f"cache {self.path} index has {len(index)} rows, meta says "
                             f"{n_images}: delete it and run `cxrnb prepare` again")
        self.size, self.source = size, meta["source"]
        self.images = np.memmap(images_file, np.uint8, "r", shape=(n_rows, size, size))
        self.index = split_by_patient(index, fractions, split_seed)
        self.labels = np.zeros((n_rows, len(LABELS)), np.float32)
        self.labels[self.index["row"].to_numpy()] = label_matrix(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"ImageCache({self.path}, {len(self):,} images, {self.size}px, {self.source})"

    def rows(self, split: Split | str | None = None, max_images: int | None = None,
             seed: int = 0) -> np.ndarray:
        """Rows of ``images`` in one split (None: all), optionally a seeded random subset."""
        if split is not None and split not in tuple(Split):
            raise CxrnbError(f"unknown split {split!r}; valid splits: {[s.value for s in Split]}")
        sel = self.index if split is None else self.index[self.index["split"] == split]
        rows = sel["row"].to_numpy()
        if max_images is not None:
            if max_images < 1:
                raise CxrnbError(f"max_images must be positive, not {max_images}")
            if max_images < len(rows):
                rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
        return rows

    def split_images(self, split: Split | str, max_images: int | None = None, seed: int = 0) -> torch.Tensor:
        """One split's images (``max_images`` of them, drawn with ``seed``) as a uint8 (N, 1, S, S) tensor."""
        return torch.from_numpy(np.asarray(self.images[self.rows(split, max_images, seed)]))[:, None]

    def split_labels(self, split: Split | str, max_images: int | None = None, seed: int = 0) -> torch.Tensor:
        """The (N, 15) multi-hot labels of ``split_images`` with the same arguments, row by row."""
        return torch.from_numpy(self.labels[self.rows(split, max_images, seed)])

    def split_patients(self, split: Split | str) -> np.ndarray:
        """The patient of each image of ``split_images(split)``, row by row: a test set's images are
        resampled by patient, since one patient's images are not independent draws."""
        if split not in tuple(Split):
            raise CxrnbError(f"unknown split {split!r}; valid splits: {[s.value for s in Split]}")
        return self.index[self.index["split"] == split]["patient"].to_numpy()

    def mean_image(self) -> torch.Tensor:
        """The training split's mean image, (S, S) in [0, 1]: the baseline every reconstruction must
        beat, and the one such image of the study (diagnostics, the calibration ladder)."""
        train = np.asarray(self.images[self.rows(Split.TRAIN)], dtype=np.float64)
        return torch.from_numpy(train.mean(0) / 255).float()

    def loader(self, split: Split | str | None = "train", batch_size: int = 64, shuffle: bool = True,
               seed: int = 0, drop_last: bool = True, max_images: int | None = None) -> ArrayLoader:
        """An ArrayLoader over one split; refuses a split too small for a single batch."""
        rows = self.rows(split, max_images, seed)
        loader = ArrayLoader(self.images, self.labels, batch_size, shuffle, seed, drop_last, rows)
        if len(loader) == 0:
            raise CxrnbError(f"the {split or 'whole'} split has {len(rows)} images, fewer than one "
                             f"batch of {batch_size}: lower batch_size or use more images")
        return loader

    def provenance(self, epochs: float = 0.0, seed: int = 0, extra: dict | None = None,
                   split: Split | str | None = "train", max_images: int | None = None) -> Provenance:
        """The provenance record of a result computed from ``split`` (``max_images`` of it)."""
        return Provenance(self.source, len(self.rows(split, max_images, seed)), self.size,
                          epochs, seed, dict(extra or {}))
