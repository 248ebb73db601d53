"""Walking a trained model's latent space: directions, traversals, interpolations, and one run's walk.

Everything here works on flat latent vectors (D,) and returns images (1 channel, [0, 1]), so a
headless run saves the same grids the interactive explorer shows. The widgets (widgets.py) only wrap
these functions: a slider per direction moves the latent along it in units of the data's spread.
``walk`` is what notebook 05 does with one trained run; it feeds a model only the images of its own
run's cache, since models of one study may differ in image size.

VAEs and GMVAEs are explored along the principal directions of their encoded means (the axes the
data actually uses); the GAN has no encoder, so it is explored along random orthonormal directions
of its N(0, I) prior. Models with an encoder expose ``encode(x) -> (mu, logvar)``; a mixture model
exposes ``n_components`` and ``sample_latent(n, generator, component=k)``.

The Dirichlet VAE's latent is a point on the simplex, where adding a direction would leave it; it is
explored with one slider per component *weight* instead (``simplex_*`` below): the sliders set the
raw weights of a few components (those with the most posterior mass over the data), the others are
held at the data-mean point's weights, and the vector is renormalised to sum to 1 before decoding.
Raising one weight and renormalising moves the point on the straight line from the data mean toward
that component's vertex, so the static figure walks exactly those lines, by the component's share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from cxrnb.data.cache import Split
from cxrnb.errors import CxrnbError
from cxrnb.evaluation.metrics import Space, memorisation, nearest
from cxrnb.labels import NO_FINDING, one_hot
from cxrnb.models.base import GenerativeModel, Prior
from cxrnb.models.expost import Coordinates, ExPostSampler, alr_inverse
from cxrnb.paths import atomic
from cxrnb.provenance import Provenance
from cxrnb.report.plots import image_grid, tile
from cxrnb.study.runs import Run

STEPS = (-3, -2, -1, 0, 1, 2, 3)   # traversal offsets, in standard deviations along a direction
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)   # a component's share of the simplex point, data mean -> vertex


def _generator(model: GenerativeModel, seed: int) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(seed)


def decode_latents(model: GenerativeModel, z: Tensor, y: Tensor | None = None) -> Tensor:
    """Flat latents (n, D) -> images (n, 1, H, W) in [0, 1], reshaped to the model's latent shape."""
    with model.evaluating():
        shape = model.sample_latent(1, _generator(model, 0)).shape[1:]     # e.g. (100, 1, 1) for the GAN
        z = torch.as_tensor(z, dtype=torch.float32).to(model.device).reshape(len(z), *shape)
        return model.generate(z, model.condition(y, len(z))).cpu()


def decode_grid(model: GenerativeModel, z: Tensor, y: Tensor | None = None, nrow: int = 8) -> Tensor:
    """Latents (n, D) -> one (H', W') image grid, ``nrow`` images per row."""
    return tile(decode_latents(model, z, y), nrow)


def _model_input(model: GenerativeModel, u8: Tensor) -> Tensor:
    """Cached uint8 images in the model's input space; images of another size are refused, since a
    model fed them would encode them without complaint (or fail deep inside its encoder)."""
    if u8.dtype != torch.uint8:
        raise CxrnbError(f"expected uint8 images as cached (0..255), got {u8.dtype}: "
                         "pass the cache's images, not converted tensors")
    while u8.dim() < 4:                                   # (S, S) or (N, S, S) -> (N, 1, S, S)
        u8 = u8.unsqueeze(0) if u8.dim() == 2 else u8.unsqueeze(1)
    size = model.input_spec.size
    if tuple(u8.shape[-2:]) != (size, size):
        raise CxrnbError(f"{model.preset or type(model).__name__} takes {size} px images, got "
                         f"{u8.shape[-2]}x{u8.shape[-1]}: pass its own run's images (run.cache.split_images)")
    return model.input_spec.to_model(u8.to(model.device))


ENCODE_BATCH = 64


def encode_means(model: GenerativeModel, data: Tensor | Iterable, progress: bool = True) -> Tensor:
    """Posterior means (N, D) of uint8 images (N, 1, S, S), or of every batch ``(u8, y)`` of a loader."""
    if not model.has_encoder:
        raise CxrnbError(f"{type(model).__name__} has no encoder: explore it with "
                         "random_directions(model.latent_dim) instead of principal directions")
    # a tensor in batches of ENCODE_BATCH: hundreds of 224-px images through VGG16 at once need gigabytes
    batches = data.split(ENCODE_BATCH) if isinstance(data, Tensor) else (u8 for u8, _ in data)
    with model.evaluating():
        means = [model.encode(_model_input(model, u8))[0].flatten(1).float().cpu()
                 for u8 in tqdm(batches, desc="encoding", disable=not progress, leave=False)]
    return torch.cat(means)


def principal_directions(model: GenerativeModel, data: Tensor | Iterable, k: int = 8,
                         progress: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """PCA of the encoded means: (mean (D,), directions (k, D) orthonormal, std (k,) along each).

    Directions are ordered by variance; each is signed so its largest entry is positive, which
    makes the result reproducible (SVD alone fixes a direction only up to sign).
    """
    means = encode_means(model, data, progress).double()
    n, dim = means.shape
    if not 1 <= k <= min(n - 1, dim):
        raise CxrnbError(f"k={k} principal directions need more than k images and k <= latent "
                         f"dim; have {n} images and dim {dim}")
    mean = means.mean(0)
    _, s, vh = torch.linalg.svd(means - mean, full_matrices=False)
    directions = vh[:k]
    signs = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    return mean.float(), (directions * signs).float(), (s[:k] / math.sqrt(n - 1)).float()


def random_directions(dim: int, k: int = 8, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """k random orthonormal directions of an N(0, I) prior, as (mean = 0, directions (k, D), std = 1).

    Under N(0, I) a latent's projection on any unit vector has mean 0 and std 1, so the triple has
    the same meaning as ``principal_directions``' and the explorer treats both alike.
    """
    if not 1 <= k <= dim:
        raise CxrnbError(f"k={k} random directions need 1 <= k <= latent dim {dim}")
    gaussian = torch.randn(dim, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)                     # orthonormal columns spanning a random subspace
    return torch.zeros(dim), q.T.float().contiguous(), torch.ones(k)


def traverse(model: GenerativeModel, base: Tensor, directions: Tensor, std: Tensor,
             steps: tuple[float, ...] = STEPS, y: Tensor | None = None) -> Tensor:
    """A grid with one row per direction: ``base + step * std[i] * directions[i]`` for each step."""
    offsets = torch.as_tensor(steps, dtype=torch.float32)
    z = base + (offsets[None, :, None] * std[:, None, None] * directions[:, None, :])  # (k, steps, D)
    return decode_grid(model, z.reshape(-1, z.shape[-1]), y, nrow=len(steps))


def sensitivity(model: GenerativeModel, base: Tensor, directions: Tensor, std: Tensor,
                y: Tensor | None = None) -> Tensor:
    """How much each slider moves the image: the mean absolute grey-level change (of [0, 1]) between
    the images at ``base - std[i] * directions[i]`` and ``base + std[i] * directions[i]``, halved,
    i.e. per slider unit (one std along direction i). Divide by ``std`` for the change per latent unit.
    A collapsed model, whose decoder ignores z, scores ~0 on every direction."""
    z = base + torch.stack([-std, std], 1)[:, :, None] * directions[:, None, :]       # (k, 2, D)
    images = decode_latents(model, z.reshape(-1, z.shape[-1]), y).reshape(len(directions), 2, -1)
    return (images[:, 1] - images[:, 0]).abs().mean(1) / 2


def sensitivity_table(model: GenerativeModel, base: Tensor, directions: Tensor, std: Tensor,
                      y: Tensor | None = None) -> pd.DataFrame:
    """``sensitivity`` per direction, per slider unit (one std) and per latent unit."""
    moves = sensitivity(model, base, directions, std, y)
    return pd.DataFrame({"direction": range(1, len(directions) + 1), "std (latent units)": std.numpy().round(4),
                         "pixel change per slider unit": moves.numpy().round(5),
                         "pixel change per latent unit": (moves / std).numpy().round(5)})


def sensitivity_sentences(tables: dict[str, pd.DataFrame], visible: float = 0.01,
                          spreads: dict[str, float] | None = None,
                          distinct: dict[str, tuple[int, int]] | None = None) -> str:
    """One sentence per explored model: how far its sliders move the image, from ``sensitivity_table``;
    a change under ``visible`` (1% of the grey range per slider unit) is called invisible, and its
    slider is folded away in the explorer. ``spreads`` (``component_spread`` per mixture model) adds
    whether its component picker changes the image; ``distinct`` ((listed, all) per model, from
    ``distinct_components``) how many components its menu lists."""
    lines = []
    for name, t in tables.items():
        moves = t["pixel change per slider unit"]
        seen = int((moves >= visible).sum())
        folded = f" (the other {len(t) - seen} are folded behind a toggle)" if 0 < seen < len(t) else ""
        lines.append(f"- **{name}**: one slider unit changes the image by {moves.min():.4f} to {moves.max():.4f} "
                     f"of the grey range (mean absolute change); {seen} of {len(t)} sliders move it by "
                     f"{visible:.0%} or more{folded}" + (" — nothing visible to explore." if not seen else "."))
    for name, spread in (spreads or {}).items():
        lines.append(f"- **{name}**'s mixture components decode to images that differ from their average by "
                     f"{spread:.4f} of the grey range" + (
                         ": the components have not separated, so the component picker changes almost "
                         "nothing." if spread < visible else "."))
    for name, (listed, k) in (distinct or {}).items():
        lines.append(f"- **{name}**'s component menu lists {listed} of its {k} components; the other {k - listed} "
                     f"decode within {visible:.0%} of a listed one.")
    return "\n".join(lines)


def labels_for(model: GenerativeModel, finding: str = NO_FINDING) -> Tensor | None:
    """The one-hot label a conditional model is explored with (None for an unconditional one)."""
    if not model.conditional:
        return None
    return one_hot(finding)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between a and b at fractions t (n,); linear when they are parallel.

    Random Gaussian latents concentrate near a sphere, and a straight line between two of them cuts
    through the low-density interior; the great-circle path stays where the prior puts its mass.
    """
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return torch.lerp(a, b, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def interpolate(model: GenerativeModel, x_a: Tensor, x_b: Tensor, n: int = 8, method: str = "linear",
                y: Tensor | None = None) -> Tensor:
    """Encode two real uint8 images, walk between their means, decode: images (n, 1, H, W)."""
    if method not in ("linear", "slerp"):
        raise CxrnbError(f"unknown interpolation {method!r}: use 'linear' or 'slerp'")
    mu = encode_means(model, torch.stack([torch.as_tensor(x_a), torch.as_tensor(x_b)]), progress=False)
    t = torch.linspace(0, 1, n)
    z = torch.lerp(mu[0], mu[1], t[:, None]) if method == "linear" else slerp(mu[0], mu[1], t)
    return decode_latents(model, z, y)


def component_latents(model: GenerativeModel, component: int, n: int = 1, seed: int = 0) -> Tensor:
    """``n`` seeded draws from one mixture component of the prior, as flat latents (n, D)."""
    with model.evaluating():
        return model.sample_latent(n, _generator(model, seed), component=component).flatten(1)


def component_samples(model: GenerativeModel, component: int, n: int = 16, seed: int = 0,
                      y: Tensor | None = None) -> Tensor:
    """n images decoded from draws of one mixture component of a GMVAE's prior: (n, 1, H, W)."""
    k = model.n_components
    if not 0 <= component < k:
        raise CxrnbError(f"{type(model).__name__} has {k} mixture components; "
                         f"component {component} does not exist" if k else
                         f"{type(model).__name__} has no mixture prior to sample a component from")
    return decode_latents(model, component_latents(model, component, n, seed), y)


def component_spread(model: GenerativeModel, y: Tensor | None = None, seed: int = 0) -> float:
    """How different the mixture's components look: one draw per component with the *same* noise
    (so only the components' means and variances differ), decoded; the mean absolute grey-level
    difference of those images from their average. ~0 means the picker changes nothing visible."""
    k = model.n_components
    if not k:
        raise CxrnbError(f"{type(model).__name__} has no mixture prior to compare components of")
    z = torch.cat([component_latents(model, c, 1, seed) for c in range(k)])
    images = decode_latents(model, z, y)
    return float((images - images.mean(0, keepdim=True)).abs().mean())


# --- the simplex (Dirichlet VAE) ----------------------------------------------------------------

def simplex_base(model: GenerativeModel, data: Tensor | Iterable, k: int = 6,
                 progress: bool = True) -> tuple[Tensor, Tensor]:
    """The data-mean point on the simplex (the average posterior mean, (K,), sums to 1) and the ``k``
    components with the most mass there, largest first: the ones worth a slider."""
    means = encode_means(model, data, progress).double()
    if not torch.allclose(means.sum(1), torch.ones(len(means), dtype=torch.float64), atol=1e-4):
        raise CxrnbError(f"{type(model).__name__}'s latent is not on the simplex: explore it with "
                         "principal_directions instead")
    if not 1 <= k <= means.shape[1]:
        raise CxrnbError(f"k={k} components to explore need 1 <= k <= {means.shape[1]}")
    base = means.mean(0)
    return base.float(), base.argsort(descending=True)[:k]


def simplex_point(base: Tensor, components: Tensor, weights: Tensor) -> Tensor:
    """``base`` with the raw weights of ``components`` replaced by ``weights``, renormalised to sum to
    1 (one point (K,), or a batch (n, K) for weights (n, k)): what the sliders decode."""
    weights = torch.as_tensor(weights, dtype=base.dtype)
    if (weights < 0).any() or (weights.sum(-1) + base.sum() - base[components].sum() <= 0).any():
        raise CxrnbError(f"simplex weights must be >= 0 and not all 0; got {weights.tolist()}")
    z = base.expand(*weights.shape[:-1], -1).clone()
    z[..., components] = weights
    return z / z.sum(-1, keepdim=True)


def toward_vertex(base: Tensor, component: int, shares: Iterable[float] = SHARES) -> Tensor:
    """Points (n, K) on the line from ``base`` with ``component`` removed (share 0) to that
    component's vertex (share 1): the path one slider moves along, by the component's share."""
    rest = base.clone()
    rest[component] = 0
    rest = rest / rest.sum()
    vertex = torch.zeros_like(base)
    vertex[component] = 1
    s = torch.as_tensor(list(shares), dtype=base.dtype)[:, None]
    return (1 - s) * rest + s * vertex


def simplex_traverse(model: GenerativeModel, base: Tensor, components: Tensor,
                     shares: tuple[float, ...] = SHARES) -> Tensor:
    """A grid with one row per component: its share of the point rising from 0 to 1 (``toward_vertex``)."""
    z = torch.cat([toward_vertex(base, int(c), shares) for c in components])
    return decode_grid(model, z, nrow=len(shares))


def simplex_sensitivity(model: GenerativeModel, base: Tensor, components: Tensor) -> Tensor:
    """How much each weight slider moves the image over its full travel: the mean absolute grey-level
    change (of [0, 1]) between the slider at 0 and at 1, the other components held at ``base``."""
    k = len(components)
    weights = base[components].expand(2 * k, k).clone()
    weights[0::2].fill_diagonal_(0.0)
    weights[1::2].fill_diagonal_(1.0)
    images = decode_latents(model, simplex_point(base, components, weights)).reshape(k, 2, -1)
    return (images[:, 1] - images[:, 0]).abs().mean(1)


def simplex_sensitivity_table(model: GenerativeModel, base: Tensor, components: Tensor) -> pd.DataFrame:
    """``simplex_sensitivity`` per component, beside its share of the data-mean point. One slider
    unit is the slider's full travel (raw weight 0 -> 1), so ``sensitivity_sentences`` reads it."""
    moves = simplex_sensitivity(model, base, components)
    return pd.DataFrame({"component": components.numpy(), "data-mean share": base[components].numpy().round(4),
                         "pixel change per slider unit": moves.numpy().round(5)})


# --- one run, as notebook 05 walks it ------------------------------------------------------------

@dataclass
class Walk:
    """One model's walk through its latent space: the traversal grid, how far each slider moves the
    image, and the axes the sliders move along."""

    run: Run
    grid: Tensor                 # (H', W') in [0, 1]: one row per direction (or simplex component)
    moves: pd.DataFrame          # sensitivity_table, or simplex_sensitivity_table
    title: str
    axes: tuple[Tensor, ...]     # (mean, directions, std); on the simplex (base, components)
    y: Tensor | None = None      # the label a conditional model is walked with (labels_for)

    @property
    def on_simplex(self) -> bool:
        return self.run.model.prior == Prior.DIRICHLET

    def figure(self) -> Figure:
        return image_grid(self.grid[None, None], nrow=1, title=self.title)


WALK_IMAGES = 512   # training images encoded for a walk's axes (the paper's encoders are slow on a CPU)


def walk_images(run: Run, n: int = WALK_IMAGES, seed: int = 0) -> Tensor:
    """At most ``n`` of ``run``'s training images (the cache's seeded random subset, in cache order)
    whose encodings give the walk's axes: six principal directions or the mean point on the simplex
    are estimated well from hundreds of images, and encoding all of CXR14 for them would take hours."""
    return run.cache.split_images(Split.TRAIN, max_images=n, seed=seed)


def walk(run: Run, k: int = 6, seed: int = 0, progress: bool = True, n_images: int = WALK_IMAGES) -> Walk:
    """``run``'s model walked along ``k`` axes: the top principal directions of its encoded training
    images (``walk_images``: those of its own cache, at its own size) for a model with an encoder,
    random orthonormal directions of its prior for one without (``seed``), and the weights of the
    ``k`` heaviest components for a latent on the simplex (Dirichlet VAE)."""
    model, name = run.model, run.preset
    if model.prior == Prior.DIRICHLET:
        base, comps = simplex_base(model, walk_images(run, n_images, seed), k=k, progress=progress)
        return Walk(run, simplex_traverse(model, base, comps), simplex_sensitivity_table(model, base, comps),
                    f"{name}: top {k} components, share 0 → 1 (data mean → vertex)", (base, comps))
    y = labels_for(model)
    if model.has_encoder:
        axes = principal_directions(model, walk_images(run, n_images, seed), k=k, progress=progress)
        title = f"{name}: traversal of the top {k} principal directions"
    else:
        axes = random_directions(model.latent_dim, k=k, seed=seed)
        title = f"{name}: traversal of {k} random directions"
    return Walk(run, traverse(model, *axes, y=y), sensitivity_table(model, *axes, y), title, axes, y)


# --- what the explorer shows beside the sliders -----------------------------------------------

VISIBLE = 0.01     # a change under 1% of the grey range (mean absolute) is called invisible


def slider_order(moves: Tensor, visible: float = VISIBLE) -> tuple[list[int], list[int]]:
    """The directions worth a visible slider, largest move first, and the ones folded away (moving
    the image by less than ``visible``), also largest first, so every visible slider does something."""
    order = [int(i) for i in torch.as_tensor(moves).argsort(descending=True, stable=True)]
    shown = [i for i in order if moves[i] >= visible]
    return shown, [i for i in order if i not in shown]          # (a NaN move is folded, not lost)


def distinct_components(model: GenerativeModel, y: Tensor | None = None, seed: int = 0,
                        visible: float = VISIBLE) -> list[int]:
    """The mixture components whose images differ: one draw per component with the same noise (as
    ``component_spread``), kept greedily in component order when its image differs from every kept
    one by at least ``visible`` (mean absolute grey level). A menu of 300 components that decode to
    one image is one entry, not 300."""
    k = model.n_components
    if not k:
        raise CxrnbError(f"{type(model).__name__} has no mixture prior to compare components of")
    return distinct_latents(model, torch.cat([component_latents(model, c, 1, seed) for c in range(k)]), y, visible)


def distinct_latents(model: GenerativeModel, z: Tensor, y: Tensor | None = None,
                     visible: float = VISIBLE) -> list[int]:
    """The rows of ``z`` (n, D) whose decoded images differ: kept greedily in order when an image
    differs from every kept one by at least ``visible`` (mean absolute grey level)."""
    images = decode_latents(model, z, y).flatten(1)
    kept: list[int] = []
    for c in range(len(z)):
        if not kept or (images[kept] - images[c]).abs().mean(1).min() >= visible:
            kept.append(c)
    return kept


def mixture_latents(sampler: ExPostSampler) -> tuple[Tensor, Tensor]:
    """An ex-post sampler's components as latents the decoder reads: their means (k, D), mapped back
    from the coordinates the mixture lives in, and their weights (k,)."""
    weights, means, _ = sampler.mixture.in_coordinates()
    z = alr_inverse(means) if sampler.coordinates == Coordinates.ALR else means
    return z.float(), weights.float()


@dataclass
class NearestTraining:
    """The training images of a run, to find the one nearest a displayed image: the study's
    memorisation check (``metrics.memorisation``: RMS grey-level distance) made visible, with its
    baseline, the distance below which ``quantile`` of real unseen test images lie."""

    train: Tensor          # uint8 (N, 1, S, S), the run's training split
    threshold: float       # ``quantile`` of the test images' distances to their nearest training image
    quantile: float = 0.05

    @classmethod
    def from_run(cls, run: Run, quantile: float = 0.05) -> NearestTraining:
        train, test = run.cache.split_images(Split.TRAIN), run.cache.split_images(Split.TEST)
        check = memorisation(test[:1], train, test, quantile=quantile, progress=False)[Space.PIXEL]
        return cls(train, check.threshold, quantile)

    def __call__(self, image: Tensor) -> tuple[int, float]:
        """The index of the training image nearest ``image`` ((H, W) in [0, 1]) and its RMS distance."""
        if tuple(image.shape[-2:]) != tuple(self.train.shape[-2:]):
            raise CxrnbError(f"a {image.shape[-2]}x{image.shape[-1]} image has no nearest among "
                             f"{self.train.shape[-2]}x{self.train.shape[-1]} training images")
        d, i = nearest(image.reshape(1, 1, *image.shape[-2:]), self.train)
        return int(i[0]), float(d[0]) / image.numel() ** 0.5

    def describe(self, index: int, distance: float) -> str:
        """One line for the explorer: the distance, and whether it is as close to a training image as
        only the closest ``quantile`` of real test images are to theirs (a possible copy)."""
        among = "among" if distance < self.threshold else "not among"
        q = f"{self.quantile:.0%}"
        return (f"nearest training image #{index}: RMS distance {distance:.3f}, {among} the closest {q} "
                f"(real test images: {q} lie within {self.threshold:.3f} of theirs)")


def save_view(image: Tensor, z: Tensor, folder: str | Path, stem: str, prov: Provenance | None = None,
              **facts) -> tuple[Path, Path]:
    """Keep what the explorer shows: the image ((H, W) in [0, 1]) as ``<stem>-NNN.png`` and its
    latent, with ``facts`` (sliders, component, label) and the run's provenance, as the ``.pt`` beside
    it, numbered after the last save there. Both are written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in folder.glob(f"{stem}-*.*")
             if (m := re.fullmatch(rf"{re.escape(stem)}-(\d+)\.(png|pt)", p.name))]
    n = max(taken, default=-1) + 1                 # after the last, so numbers follow the saves
    png, pt = folder / f"{stem}-{n:03d}.png", folder / f"{stem}-{n:03d}.pt"
    with atomic(pt) as tmp:
        torch.save({"latent": z.detach().float().cpu(), **facts,
                    "provenance": prov.to_dict() if prov is not None else None}, tmp)
    with atomic(png) as tmp:
        Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(tmp, format="png")
    return png, pt
