"""The project's own chest X-ray classifier: 14 findings, multi-label, trained on the real train split.

It serves twice: its penultimate features are a feature space trained on this very data, built once
and shipped (``cxrnb.evaluation.ruler``, read by ``cxrnb.evaluation.features.ClassifierFeatures``),
and its test AUROC measures whether synthetic images help (``cxrnb.evaluation.usefulness``), the
augmentation experiment the paper names as future work.

The network is a compact VGG-style CNN rather than a ResNet-18: at 64-128 px greyscale it needs a
fraction of a ResNet-18's compute and parameters (``test_network_is_compact`` bounds its size), so an
epoch of the CXR14 subset trains quickly on a CPU. No pretrained weights exist here, so the capacity
a ResNet would bring on ImageNet cannot be used anyway, and the subset's training images would not
fill it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError
from cxrnb.labels import FINDINGS
from cxrnb.paths import atomic
from cxrnb.runtime import pick_device


@dataclass
class ClassifierConfig:
    epochs: int = 10
    lr: float = 1e-3              # Adam
    weight_decay: float = 1e-4
    batch_size: int = 64
    width: int = 32               # channels of the first conv; the features are 8 * width wide
    hflip: bool = True            # random horizontal flips, as CheXNet (Rajpurkar et al., 2017)
    shift: float = 0.05           # random translation up to this fraction of the image side
    seed: int = 0
    steps: int | None = None      # gradient steps in all; None: epochs x (N // batch_size)
    spread_weight: float = 0.0    # weight of ``spread_penalty`` on the features (0: plain BCE)


STAGE_ENDS = (3, 9, 15, 21)     # CxrNet.body index after each stage's last ReLU (stem, 3 blocks)


def resize_to(x: Tensor, size: int | None) -> Tensor:
    """(B, 1, H, W) images at ``size`` px by antialiased bilinear resampling (unchanged when already
    there, or when ``size`` is None): a fixed ruler reads every image at its own resolution."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def spread_penalty(h: Tensor) -> Tensor:
    """VICReg's variance and covariance terms (Bardes et al., 2022) on a batch of features (B, D):
    a hinge that keeps every dimension's std above 1, plus the squared off-diagonal covariances / D.
    Beside a classification loss it stops the features collapsing onto the few directions the 14
    labels need, so distances in them see more than the labels."""
    hc = h - h.mean(0)
    var = F.relu(1 - torch.sqrt(hc.var(0) + 1e-4)).mean()
    cov = hc.T @ hc / (len(h) - 1)
    off = cov - torch.diag(torch.diag(cov))
    return var + off.pow(2).sum() / h.shape[1]


class CxrNet(nn.Module):
    """Stride-2 stem, three (stride-2 conv, conv) blocks doubling the width, global average pool."""

    def __init__(self, width: int = 32, n_out: int = len(FINDINGS)):
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(True)]

        w = width
        self.body = nn.Sequential(
            *conv(1, w, 2),
            *conv(w, 2 * w, 2), *conv(2 * w, 2 * w),
            *conv(2 * w, 4 * w, 2), *conv(4 * w, 4 * w),
            *conv(4 * w, 8 * w, 2), *conv(8 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * w, n_out)
        self.dim = 8 * w

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, 8 * width) penultimate features."""
        return self.body(2 * x - 1)

    def stage_features(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, 15 * width): the global average of every stage's output
        (stem, then each block), so fine detail that the deepest block pools away still counts."""
        h, pooled = 2 * x - 1, []
        for i, layer in enumerate(self.body[:-2]):
            h = layer(h)
            if i + 1 in STAGE_ENDS:
                pooled.append(h.mean((2, 3)))
        return torch.cat(pooled, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Classifier:
    """A trained ``CxrNet`` with its config and training history; batched inference on any input
    that ``as_unit_images`` accepts (uint8 cache arrays included)."""

    def __init__(self, net: CxrNet, cfg: ClassifierConfig, history: list[dict] | None = None,
                 resolution: int | None = None, feature_scale: float = 1.0):
        self.net, self.cfg, self.history = net.eval(), cfg, history or []
        # a shipped ruler (cxrnb.evaluation.ruler) reads every image at one size, in fixed units
        self.resolution, self.feature_scale = resolution, feature_scale

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _batched(self, fn, x, batch_size: int) -> Tensor:
        self.net.eval()
        out = [fn(as_unit_images(x[i:i + batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out)

    def embed(self, x: Tensor) -> Tensor:
        """One batch on the network's device -> penultimate features at ``resolution``, times
        ``feature_scale``."""
        return self.net.features(resize_to(x, self.resolution)) * self.feature_scale

    def features(self, x, batch_size: int = 256) -> Tensor:
        """(N, D) penultimate features (at ``resolution``, times ``feature_scale``)."""
        return self._batched(self.embed, x, batch_size)

    def predict_proba(self, x, batch_size: int = 256) -> Tensor:
        """(N, 14) independent sigmoid probabilities, one per finding."""
        return self._batched(lambda b: torch.sigmoid(self.net(resize_to(b, self.resolution))), x, batch_size)

    def save(self, path: str | Path) -> Path:
        """Write config, weights and history (atomically)."""
        with atomic(path) as tmp:
            torch.save({"cfg": asdict(self.cfg), "state": self.net.state_dict(),
                        "history": self.history}, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Classifier:
        if not Path(path).is_file():
            raise CxrnbError(f"no classifier at {path}: train one with fit_classifier(...).save(path)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        cfg = ClassifierConfig(**ckpt["cfg"])
        net = CxrNet(cfg.width)
        net.load_state_dict(ckpt["state"])
        return cls(net.to(pick_device(device)), cfg, ckpt["history"])


def checked(images, labels) -> tuple[Tensor, Tensor]:
    """Validate at the edge: images as (N, 1, H, W) uint8 or float in [0, 1] (uint8 stays uint8 so
    a full-size cache is not copied as float), labels as (N, 14) findings."""
    x = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    x = x.unsqueeze(1) if x.dim() == 3 else x
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if x.dim() != 4 or x.shape[1] != 1:
        raise CxrnbError(f"images must be (N, H, W) or (N, 1, H, W) greyscale, got {tuple(x.shape)}")
    if y.dim() != 2 or y.shape[1] not in (len(FINDINGS), len(FINDINGS) + 1) or len(y) != len(x):
        raise CxrnbError(f"labels must be ({len(x)}, 15) over cxrnb.labels.LABELS (or (N, 14) "
                         f"findings), got {tuple(y.shape)}")
    if x.dtype != torch.uint8:
        x = x.float()
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise CxrnbError("float images must lie in [0, 1]; pass uint8 cache images or "
                             "divide by 255")
    return x, y[:, :len(FINDINGS)]


def _augment(x: Tensor, cfg: ClassifierConfig, g: torch.Generator) -> Tensor:
    """Random flips and translations (replicate-padded crops), drawn from ``g``."""
    if cfg.hflip:
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    p = round(cfg.shift * x.shape[-1])
    if p > 0:
        size = x.shape[-1]
        padded = F.pad(x, (p, p, p, p), mode="replicate")
        dx, dy = torch.randint(0, 2 * p + 1, (2, len(x)), generator=g).tolist()
        x = torch.stack([padded[i, :, b:b + size, a:a + size] for i, (a, b) in enumerate(zip(dx, dy))])
    return x


def total_steps(cfg: ClassifierConfig, n: int) -> int:
    """Gradient steps in all for ``n`` training images: ``cfg.steps``, else ``cfg.epochs`` epochs of
    ``n // cfg.batch_size`` full batches."""
    return cfg.steps if cfg.steps is not None else cfg.epochs * (n // cfg.batch_size)


def _train_epoch(net: CxrNet, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, cfg: ClassifierConfig,
                 g: torch.Generator, steps: int, bar: tqdm) -> float:
    """``steps`` batches in the order of one random permutation of the training set, each augmented
    (``_augment``), all drawn from ``g``; returns the epoch's mean loss."""
    device = next(net.parameters()).device
    net.train()
    order, total = torch.randperm(len(x), generator=g), 0.0
    for i in range(steps):
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        xb = _augment(as_unit_images(x[idx]), cfg, g).to(device)
        h = net.features(xb)
        loss = F.binary_cross_entropy_with_logits(net.head(h), y[idx].to(device))
        if cfg.spread_weight:
            loss = loss + cfg.spread_weight * spread_penalty(h)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
        bar.update()
    return total / steps


def fit_classifier(images, labels, cfg: ClassifierConfig | None = None, val=None,
                   device: str | torch.device = "cpu", progress: bool = True,
                   init: Classifier | None = None) -> Classifier:
    """Train a ``CxrNet`` with binary cross-entropy over the 14 findings.

    ``images``: uint8 (N, S, S) cache images or float (N, 1, S, S) in [0, 1]; ``labels``: (N, 15)
    over LABELS ("No Finding" is dropped: it is the absence of the 14). With ``val=(images, labels)``
    the macro AUROC is logged each epoch and the best epoch's weights are kept. With ``init`` the
    network starts from a copy of that classifier's weights (fine-tuning, with a fresh optimiser);
    ``init`` itself is left as it was.
    """
    cfg = cfg or ClassifierConfig()
    x, y = checked(images, labels)
    if len(x) < cfg.batch_size:
        raise CxrnbError(f"{len(x)} training images is fewer than one batch ({cfg.batch_size}); "
                         f"lower ClassifierConfig.batch_size")
    val = checked(*val) if val is not None else None
    # the network's initial weights from the global stream, batches and augmentations from g
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    device = pick_device(device)
    net = copy.deepcopy(init.net) if init is not None else CxrNet(cfg.width)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    clf, history, best = Classifier(net, cfg), [], (-1.0, None)
    per_epoch = len(x) // cfg.batch_size                  # drop the last partial batch (BatchNorm)
    left = total_steps(cfg, len(x))
    if left < 1:
        raise CxrnbError(f"ClassifierConfig gives {left} gradient steps; set epochs or steps >= 1")
    bar = tqdm(total=left, desc="classifier", disable=not progress)
    epoch = 0
    while left > 0:
        # one epoch (the last may be cut short by cfg.steps)
        steps, epoch = min(per_epoch, left), epoch + 1
        left -= steps
        loss = _train_epoch(net, opt, x, y, cfg, g, steps, bar)
        row = {"epoch": epoch, "steps": steps, "train_loss": loss}
        # validation: keep the best epoch's weights
        if val is not None:
            row["val_macro_auroc"] = float(auroc_per_finding(clf, *val).mean())
            if row["val_macro_auroc"] > best[0]:
                best = (row["val_macro_auroc"], {k: v.clone() for k, v in net.state_dict().items()})
        history.append(row)
        bar.set_postfix(row)
    bar.close()
    if best[1] is not None:
        net.load_state_dict(best[1])
    clf.history = history
    net.eval()
    return clf


def auroc_per_finding(classifier: Classifier, images, labels) -> pd.Series:
    """ROC AUC of each of the 14 findings on (images, labels), by sklearn's ``roc_auc_score``.

    A finding whose test labels are all one class has no AUROC: it is NaN (not 0.5), so the macro
    mean (``.mean()``, which skips NaN) averages only the findings that could be evaluated.
    """
    x, y = checked(images, labels)
    p = classifier.predict_proba(x).numpy()
    y = y.numpy()
    auc = [roc_auc_score(y[:, j], p[:, j]) if 0 < y[:, j].sum() < len(y) else np.nan
           for j in range(len(FINDINGS))]
    return pd.Series(auc, index=list(FINDINGS), name="auroc")
