"""Why the cache exists, measured: decoding on every access vs reading preprocessed rows.

`python -m cxrnb.bench data [--root R] [--size S]` times, in one run on the same images:
(a) a naive Dataset that decodes, resizes and equalizes a PNG on every access (through a
DataLoader, batch 64, no workers), (b) the ArrayLoader reading the same batches from the cache,
their ratio, the cache build rate with 1 and 2 worker processes, and our equalize vs torchvision's.
Everything runs with one torch thread so the comparisons are like for like.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
import torchvision.transforms.functional as TF

from cxrnb.data.cache import prepare
from cxrnb.data.index import data_source, label_matrix, load_index, resolve_root
from cxrnb.data.transforms import equalize, load_grey, load_preprocessed


class NaiveDataset(torch.utils.data.Dataset):
    """The textbook Dataset: every access pays for PNG decoding and preprocessing again."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: int):
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        u8 = load_preprocessed(self.paths[i], self.size)
        return torch.from_numpy(u8).unsqueeze(0), torch.from_numpy(self.labels[i])


def _rate(n_images: int, seconds: float) -> float:
    return n_images / max(seconds, 1e-9)


def _clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


LABELS = {"build_1": "cache build, 1 worker", "build_2": "cache build, 2 workers",
          "naive": "naive Dataset (decode+resize+equalize)",
          "cached": "cache ArrayLoader (memmap batches)"}


def main(root=None, size: int = 128, batch_size: int = 64, naive_images: int = 512,
         min_seconds: float = 1.0) -> dict:
    """Run the benchmark, print the table and return its numbers (rates in images/s)."""
    torch.set_num_threads(1)
    root = resolve_root(root)
    df = load_index(root)
    n, out = len(df), {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            seconds = _clock(lambda w=workers: prepare(root, size=size, workers=w,
                                                       cache_dir=f"{tmp}/w{w}", progress=False))
            out[f"build_{workers}"] = _rate(n, seconds)
        cache = prepare(root, size=size, cache_dir=f"{tmp}/w2", progress=False)

        naive = NaiveDataset(df["path"].astype(str).tolist()[:naive_images],
                             label_matrix(df)[:naive_images], size)
        batches = torch.utils.data.DataLoader(naive, batch_size=batch_size, shuffle=True)
        out["naive"] = _rate(len(naive), _clock(lambda: list(batches)))

        loader = cache.loader(None, batch_size=batch_size, seed=0)
        seen, start, epoch = 0, time.perf_counter(), 0
        while time.perf_counter() - start < min_seconds:
            for u8, _ in loader.epoch_batches(epoch):
                seen += len(u8)
            epoch += 1
        out["cached"] = _rate(seen, time.perf_counter() - start)
        del cache, loader                  # release the memmaps before the folder goes
    out["speedup"] = out["cached"] / out["naive"]

    images = [load_grey(p) for p in df["path"][:naive_images]]
    tensors = [torch.from_numpy(u)[None] for u in images]
    out["equalize_us"] = _clock(lambda: [equalize(u) for u in images]) / len(images) * 1e6
    out["torchvision_equalize_us"] = (_clock(lambda: [TF.equalize(t) for t in tensors])
                                      / len(images) * 1e6)

    h, w = images[0].shape
    print(f"data benchmark: {data_source(root, n_images=n)}, {n:,} images ({h}x{w} px files), "
          f"{size} px, batch {batch_size}, 1 torch thread")
    for key, label in LABELS.items():
        print(f"  {label:<40} {out[key]:>12,.0f} images/s")
    print(f"  {'cache / naive':<40} {out['speedup']:>12,.0f} x   (target >= 50 x)")
    print(f"  {'equalize one image: numpy (ours)':<40} {out['equalize_us']:>12,.0f} us")
    print(f"  {'equalize one image: torchvision':<40} {out['torchvision_equalize_us']:>12,.0f} us")
    return out
