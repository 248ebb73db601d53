"""The fixed rulers: feature networks trained once, shipped with the package, checksummed at load.

A Fréchet distance is only comparable with another measured in the same space. A classifier
retrained in every run moves that space with the machine, the precision and the seed, so the
networks behind the project's own feature spaces are built once, deterministically (fp32, fixed
seed and thread count, ``torch.use_deterministic_algorithms``), on the training split only, and
their weights ship in ``weights/`` with a manifest (``rulers.json``): each file's SHA-256, how it
was made, and what it measures. Every run loads them and none retrains them; ``cxrnb ruler
--retrain`` rebuilds them, and says which files changed.

The two spaces (``SPECS``):

- ``cxr-classifier``: a ``CxrNet`` trained on the 14 findings with binary cross-entropy plus
  VICReg's variance-covariance term on its penultimate features (``classifier.spread_penalty``).
  Trained on labels alone, the features collapse onto the few directions the labels need (an
  effective dimension of about 3), and an FD there compares images on about 3 numbers; the
  spread term asks the network to use its dimensions for distinct, decorrelated information
  while it still classifies. The epoch is chosen on the validation split's macro AUROC.
- ``random-init``: a ``CxrNet`` with weights drawn from a fixed seed and never trained, read at
  every stage (``CxrNet.stage_features``): fitted to nothing, so it shares no blind spot with the
  labels, and its early stages see the fine detail a blur removes, which the deepest stage alone
  pooled away. Its weights ship too, so the space does not depend on how a torch version turns a
  seed into weights.

Both read images at ``RESOLUTION`` px (64, the project's CPU size: each network trains in a few
minutes on two cores), larger or smaller ones resampled first, so models at every size share one
scale. Features are multiplied by one fixed scalar per space (in the manifest) that gives the
real training features a mean per-dimension variance of 1: FDs then read in units of a typical
feature's variance, not 10⁻⁶; one scalar changes no ranking and no effective dimension.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cxrnb.data.cache import Split, prepare
from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.classifier import (
    Classifier,
    ClassifierConfig,
    CxrNet,
    auroc_per_finding,
    fit_classifier,
    resize_to,
)
from cxrnb.evaluation.metrics import effective_dimension
from cxrnb.paths import atomic, write_text
from cxrnb.provenance import git_commit
from cxrnb.runtime import describe_cpu, library_versions, pick_device

RESOLUTION = 64
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "rulers.json"
RETRAIN = "`cxrnb ruler --retrain` rebuilds it"


@dataclass(frozen=True)
class RulerSpec:
    """How one shipped network is made: trained as a classifier (``classifier``) or left at its
    seeded initialisation (``classifier=None``), and which features are read from it."""

    name: str
    features: str                          # "penultimate" (CxrNet.features) or "stages"
    classifier: ClassifierConfig | None    # None: untrained, weights from ``seed``
    resolution: int = RESOLUTION
    width: int = 32
    seed: int = 0
    threads: int = 1                       # fixed: reductions, and so the weights, depend on it

    @property
    def file(self) -> str:
        return f"{self.name}.pt"


SPECS = (RulerSpec("cxr-classifier", "penultimate",
                   ClassifierConfig(epochs=22, width=32, seed=0, spread_weight=0.1), threads=1),
         RulerSpec("random-init", "stages", None))


@dataclass
class RulerData:
    """The real splits at the ruler's size (uint8 (N, 1, S, S)) and where they came from."""

    train: Tensor
    train_y: Tensor
    val: Tensor
    val_y: Tensor
    test: Tensor
    test_y: Tensor
    description: dict = field(default_factory=dict)


def ruler_data(root: str | Path | None, size: int = RESOLUTION) -> RulerData:
    """Every split of the cache at ``size`` (built if needed), with source and image counts."""
    cache = prepare(root, size=size, progress=False)
    parts = [t for s in (Split.TRAIN, Split.VAL, Split.TEST)
             for t in (cache.split_images(s), cache.split_labels(s))]
    counts = {s.value: len(parts[2 * i]) for i, s in enumerate((Split.TRAIN, Split.VAL, Split.TEST))}
    return RulerData(*parts, {"source": cache.source, "images": counts, "size": size,
                              "cache": cache.path.name, "trained on": "train (epoch chosen on val)"})


# --- making a network ---------------------------------------------------------------------------

@contextmanager
def deterministic(threads: int):
    """fp32 on the CPU, a fixed thread count, deterministic kernels; restored afterwards."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def build(spec: RulerSpec, data: RulerData, progress: bool = False) -> CxrNet:
    """The network of ``spec``: trained on ``data.train`` (epoch chosen on val), or seeded only."""
    with deterministic(spec.threads):
        if spec.classifier is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                return CxrNet(spec.width).eval()
        val = (data.val, data.val_y) if len(data.val) else None
        with torch.random.fork_rng(devices=[]):
            return fit_classifier(data.train, data.train_y, spec.classifier, val=val, device="cpu",
                                  progress=progress).net.eval()


def read(net: CxrNet, features: str, resolution: int, x: Tensor) -> Tensor:
    """One batch of unit images -> the named features at ``resolution``, unscaled."""
    x = resize_to(x, resolution)
    return net.features(x) if features == "penultimate" else net.stage_features(x)


@torch.no_grad()
def raw_features(net: CxrNet, spec: RulerSpec, images, batch_size: int = 256) -> Tensor:
    net.eval()
    return torch.cat([read(net, spec.features, spec.resolution, as_unit_images(images[i:i + batch_size]))
                      for i in range(0, len(images), batch_size)])


def serialised(net: CxrNet) -> bytes:
    """The state dict as torch.save bytes, written through memory: a file's name would enter the
    archive's record names, and with it the checksum."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def measure(net: CxrNet, spec: RulerSpec, data: RulerData) -> dict:
    """The manifest's numbers: dim, the unit scale (from train), and on the test split the effective
    dimension and, for a classifier, the macro AUROC."""
    train = raw_features(net, spec, data.train).double()
    scale = float(1 / train.var(0).mean().sqrt())
    out = {"dim": train.shape[1], "scale": scale,
           "effective_dimension": effective_dimension(raw_features(net, spec, data.test))}
    if spec.classifier is not None:
        clf = Classifier(net, spec.classifier, resolution=spec.resolution)
        out["test_macro_auroc"] = float(auroc_per_finding(clf, data.test, data.test_y).mean())
    return out


def state_sha256(net: CxrNet) -> str:
    """SHA-256 over the state dict's names, shapes and bytes, in order: equal iff equal weights."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- the manifest and loading -------------------------------------------------------------------

def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    path = Path(weights_dir) / MANIFEST
    if not path.is_file():
        raise CxrnbError(f"ruler manifest {path} is missing; {RETRAIN}")
    return json.loads(path.read_text())


def verified(name: str, weights_dir: Path = WEIGHTS_DIR) -> tuple[Path, dict]:
    """The weights file of space ``name`` and its manifest entry, after checking its SHA-256."""
    entry = read_manifest(weights_dir)["spaces"].get(name)
    if entry is None:
        raise CxrnbError(f"ruler {name!r} is not in {Path(weights_dir) / MANIFEST}; {RETRAIN}")
    path = Path(weights_dir) / entry["file"]
    if not path.is_file():
        raise CxrnbError(f"ruler file {path} is missing; {RETRAIN}")
    if (sha := file_sha256(path)) != entry["sha256"]:
        raise CxrnbError(f"ruler file {path} has SHA-256 {sha[:12]}…, not the manifest's "
                         f"{entry['sha256'][:12]}…; {RETRAIN}")
    return path, entry


def spec_of(name: str) -> RulerSpec:
    return next(s for s in SPECS if s.name == name)


def load_network(name: str, device: str | torch.device = "cpu",
                 weights_dir: Path = WEIGHTS_DIR) -> tuple[CxrNet, dict]:
    """A shipped network (checksum-checked), in eval mode on ``device``, with its manifest entry."""
    path, entry = verified(name, weights_dir)
    net = CxrNet(entry["width"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(pick_device(device)).eval(), entry


def load_ruler(device: str | torch.device = "cpu", weights_dir: Path = WEIGHTS_DIR) -> Classifier:
    """The shipped cxr-classifier: features and probabilities of images of any size, read at its
    resolution; features in the manifest's units."""
    net, entry = load_network("cxr-classifier", device, weights_dir)
    return Classifier(net, ClassifierConfig(**entry["training"]["config"]),
                      resolution=entry["resolution"], feature_scale=entry["scale"])


def ruler_facts(weights_dir: Path = WEIGHTS_DIR) -> dict[str, dict]:
    """Per shipped space, what results.md states about it (from the manifest, nothing re-measured)."""
    keys = ("resolution", "dim", "effective_dimension", "test_macro_auroc", "sha256", "scale")
    return {name: {**{k: e[k] for k in keys if k in e}, "training": e["training"]["description"],
                   "data": e["data"]} for name, e in read_manifest(weights_dir)["spaces"].items()}


def status(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """One line per shipped space: file, checksum, resolution, dim, effective dim, AUROC."""
    lines = []
    for name, e in read_manifest(weights_dir)["spaces"].items():
        try:
            verified(name, weights_dir)
            ok = "checksum ok"
        except CxrnbError as err:
            ok = f"CHECKSUM FAILED ({err})"
        auc = f", test macro AUROC {e['test_macro_auroc']:.3f}" if "test_macro_auroc" in e else ""
        lines.append(f"{name}: {e['file']} {ok}; {e['resolution']} px, dim {e['dim']}, "
                     f"effective dim {e['effective_dimension']:.1f}{auc}")
    return lines


# --- retraining ---------------------------------------------------------------------------------

def describe(spec: RulerSpec) -> str:
    if spec.classifier is None:
        return f"untrained CxrNet(width={spec.width}) from seed {spec.seed}; features: every stage, pooled"
    c = spec.classifier
    return (f"CxrNet(width={spec.width}), BCE over 14 findings + {c.spread_weight:g} x VICReg "
            f"variance-covariance on the penultimate features, {c.epochs} epochs, Adam lr {c.lr:g}, "
            f"flips + {c.shift:g} shifts, seed {c.seed}, fp32, {spec.threads} threads, deterministic")


def entry_for(spec: RulerSpec, net: CxrNet, data: RulerData, path: Path, seconds: float) -> dict:
    return {"file": spec.file, "sha256": file_sha256(path), "state_sha256": state_sha256(net),
            "resolution": spec.resolution, "width": spec.width, "features": spec.features,
            **measure(net, spec, data), "data": data.description,
            "training": {"description": describe(spec), "config": asdict(spec.classifier)
                         if spec.classifier else {"seed": spec.seed}, "seconds": round(seconds, 1)},
            "made_by": {"commit": git_commit(), "versions": library_versions(), "cpu": describe_cpu(),
                        "precision": "fp32"}}


def retrain(root: str | Path | None, weights_dir: Path = WEIGHTS_DIR,
            specs: tuple[RulerSpec, ...] = SPECS, progress: bool = True) -> list[str]:
    """Rebuild every network of ``specs`` from the data at ``root``, write weights and manifest
    atomically, re-measure; one line per file saying whether its checksum changed."""
    weights_dir = Path(weights_dir)
    try:
        old = read_manifest(weights_dir)["spaces"]
    except CxrnbError:
        old = {}
    spaces, lines = dict(old), []
    for spec in specs:
        data = ruler_data(root, spec.resolution)
        start = time.perf_counter()
        net = build(spec, data, progress)
        path = weights_dir / spec.file
        with atomic(path) as tmp:
            tmp.write_bytes(serialised(net))
        spaces[spec.name] = entry_for(spec, net, data, path, time.perf_counter() - start)
        before = old.get(spec.name, {}).get("sha256")
        change = "unchanged" if before == spaces[spec.name]["sha256"] else \
            "new" if before is None else "CHANGED"
        lines.append(f"{spec.name}: {path} {change} (sha256 {spaces[spec.name]['sha256'][:12]}…)")
    write_text(weights_dir / MANIFEST, json.dumps({"spaces": spaces}, indent=2) + "\n")
    return lines
