"""Walking a trained model's latent space: directions, traversals, interpolations, and a widget.

Everything here works on flat latent vectors (D,) and returns images (1 channel, [0, 1]), so a
headless run saves the same grids the interactive explorer shows. The widget only wraps these
functions: a slider per direction moves the latent along it in units of the data's spread.

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

import io
import math
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS, NO_FINDING, one_hot
from cxrnb.models.base import GenerativeModel
from cxrnb.report.plots import tile

STEPS = (-3, -2, -1, 0, 1, 2, 3)   # traversal offsets, in standard deviations along a direction
MEAN = -1                          # the explorer's "data mean" base, beside components 0..K-1
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)   # a component's share of the simplex point, data mean -> vertex


def _generator(model: GenerativeModel, seed: int) -> torch.Generator:
    return torch.Generator(device=model.device).manual_seed(seed)


def generate(model: GenerativeModel, z: Tensor, y: Tensor | None = None) -> Tensor:
    """Flat latents (n, D) -> images (n, 1, H, W) in [0, 1], reshaped to the model's latent shape."""
    with model.evaluating():
        shape = model.sample_latent(1, _generator(model, 0)).shape[1:]     # e.g. (100, 1, 1) for the GAN
        z = torch.as_tensor(z, dtype=torch.float32).to(model.device).reshape(len(z), *shape)
        return model.generate(z, model.condition(y, len(z))).cpu()


def decode_grid(model: GenerativeModel, z: Tensor, y: Tensor | None = None, nrow: int = 8) -> Tensor:
    """Latents (n, D) -> one (H', W') image grid, ``nrow`` images per row."""
    return tile(generate(model, z, y), nrow)


def _model_input(model: GenerativeModel, u8: Tensor) -> Tensor:
    if u8.dtype != torch.uint8:
        raise CxrnbError(f"expected uint8 images as cached (0..255), got {u8.dtype}: "
                         "pass the cache's images, not converted tensors")
    while u8.dim() < 4:                                   # (S, S) or (N, S, S) -> (N, 1, S, S)
        u8 = u8.unsqueeze(0) if u8.dim() == 2 else u8.unsqueeze(1)
    return model.input_spec.to_model(u8.to(model.device))


def encode_means(model: GenerativeModel, data: Tensor | Iterable, progress: bool = True) -> Tensor:
    """Posterior means (N, D) of uint8 images (N, 1, S, S), or of every batch ``(u8, y)`` of a loader."""
    if not model.has_encoder:
        raise CxrnbError(f"{type(model).__name__} has no encoder: explore it with "
                         "random_directions(model.latent_dim) instead of principal directions")
    batches = [data] if isinstance(data, Tensor) else (u8 for u8, _ in data)
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
    images = generate(model, z.reshape(-1, z.shape[-1]), y).reshape(len(directions), 2, -1)
    return (images[:, 1] - images[:, 0]).abs().mean(1) / 2


def sensitivity_table(model: GenerativeModel, base: Tensor, directions: Tensor, std: Tensor,
                      y: Tensor | None = None) -> pd.DataFrame:
    """``sensitivity`` per direction, per slider unit (one std) and per latent unit."""
    moves = sensitivity(model, base, directions, std, y)
    return pd.DataFrame({"direction": range(1, len(directions) + 1), "std (latent units)": std.numpy().round(4),
                         "pixel change per slider unit": moves.numpy().round(5),
                         "pixel change per latent unit": (moves / std).numpy().round(5)})


def sensitivity_sentences(tables: dict[str, pd.DataFrame], visible: float = 0.01,
                          spreads: dict[str, float] | None = None) -> str:
    """One sentence per explored model: how far its sliders move the image, from ``sensitivity_table``;
    a change under ``visible`` (1% of the grey range per slider unit) is called invisible. ``spreads``
    (``component_spread`` per mixture model) adds whether its component picker changes the image."""
    lines = []
    for name, t in tables.items():
        moves = t["pixel change per slider unit"]
        seen = int((moves >= visible).sum())
        lines.append(f"- **{name}**: one slider unit changes the image by {moves.min():.4f} to {moves.max():.4f} "
                     f"of the grey range (mean absolute change); {seen} of {len(t)} sliders move it by "
                     f"{visible:.0%} or more" + (" — nothing visible to explore." if not seen else "."))
    for name, spread in (spreads or {}).items():
        lines.append(f"- **{name}**'s mixture components decode to images that differ from their average by "
                     f"{spread:.4f} of the grey range" + (
                         ": the components have not separated, so the component picker changes almost "
                         "nothing." if spread < visible else "."))
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
    return generate(model, z, y)


def n_components(model: GenerativeModel) -> int:
    """Mixture components the model can sample from one at a time (0 when it has no mixture)."""
    return model.n_components


def component_samples(model: GenerativeModel, component: int, n: int = 16, seed: int = 0,
                      y: Tensor | None = None) -> Tensor:
    """n images decoded from draws of one mixture component of a GMVAE's prior: (n, 1, H, W)."""
    k = n_components(model)
    if not 0 <= component < k:
        raise CxrnbError(f"{type(model).__name__} has {k} mixture components; "
                         f"component {component} does not exist" if k else
                         f"{type(model).__name__} has no mixture prior to sample a component from")
    with model.evaluating():
        z = model.sample_latent(n, _generator(model, seed), component=component)
    return generate(model, z.flatten(1), y)


def component_spread(model: GenerativeModel, y: Tensor | None = None, seed: int = 0) -> float:
    """How different the mixture's components look: one draw per component with the *same* noise
    (so only the components' means and variances differ), decoded; the mean absolute grey-level
    difference of those images from their average. ~0 means the picker changes nothing visible."""
    k = n_components(model)
    if not k:
        raise CxrnbError(f"{type(model).__name__} has no mixture prior to compare components of")
    with model.evaluating():
        z = torch.cat([model.sample_latent(1, _generator(model, seed), component=c) for c in range(k)])
    images = generate(model, z.flatten(1), y)
    return float((images - images.mean(0, keepdim=True)).abs().mean())


def _png(image: Tensor) -> bytes:
    """A (H, W) [0, 1] image as PNG bytes, for the widget."""
    buf = io.BytesIO()
    Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buf, format="png")
    return buf.getvalue()


def explorer_widget(model: GenerativeModel, mean: Tensor, directions: Tensor, std: Tensor,
                    y: Tensor | None = None, limit: float = 3.0, seed: int = 0, width: int = 256):
    """Sliders (one per direction, in std units), for a mixture a component menu, and for a
    conditional model a label menu, over the image.

    The displayed latent is ``base + sum_i slider_i * std[i] * directions[i]``, where the base is
    ``mean`` or, when a component is chosen, a fixed draw (``seed``) from that component. A
    conditional model draws the image for one label (one-hot) picked from the menu, or for ``y`` as
    given (the menu's first entry when ``y`` is passed; else it starts at "No Finding"), so only
    the label changes between picks. Beside each slider, how much one slider unit changes the image
    at the mean for the starting label (``sensitivity``). Returns the container;
    ``container.sliders``, ``container.menu``, ``container.labels`` and ``container.image`` give the parts.
    """
    import ipywidgets as w

    sliders = [w.FloatSlider(value=0.0, min=-limit, max=limit, step=0.1, description=f"dir {i + 1}",
                             continuous_update=False) for i in range(len(directions))]
    k = n_components(model)
    menu = w.Dropdown(options=[("data mean", MEAN)] + [(f"component {c}", c) for c in range(k)],
                      value=MEAN, description="base")   # (a None value would show as a blank menu)
    given = "labels given"
    labels = w.Dropdown(options=([given] if y is not None else []) + list(LABELS),
                        value=given if y is not None else NO_FINDING, description="label")
    image = w.Image(format="png", layout=w.Layout(width=f"{width}px"))

    def label() -> Tensor | None:
        return y if not model.conditional or labels.value == given else labels_for(model, labels.value)

    def base() -> Tensor:
        if menu.value == MEAN:
            return mean
        with model.evaluating():
            z = model.sample_latent(1, _generator(model, seed), component=menu.value)
        return z.flatten().float().cpu()

    def redraw(_=None) -> None:
        offsets = torch.tensor([s.value for s in sliders]) * std
        z = base() + offsets @ directions
        image.value = _png(generate(model, z[None], label())[0, 0])

    for control in sliders + [menu, labels]:
        control.observe(redraw, names="value")
    redraw()
    moves = sensitivity(model, mean, directions, std, label())
    rows = [w.HBox([s, w.Label(f"Δ {float(m):.3f} per unit")]) for s, m in zip(sliders, moves)]
    controls = rows + ([menu] if k else []) + ([labels] if model.conditional else [])
    container = w.HBox([w.VBox(controls), image])
    container.sliders, container.menu, container.image = sliders, (menu if k else None), image
    container.labels = labels if model.conditional else None
    return container


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
    images = generate(model, simplex_point(base, components, weights)).reshape(k, 2, -1)
    return (images[:, 1] - images[:, 0]).abs().mean(1)


def simplex_sensitivity_table(model: GenerativeModel, base: Tensor, components: Tensor) -> pd.DataFrame:
    """``simplex_sensitivity`` per component, beside its share of the data-mean point. One slider
    unit is the slider's full travel (raw weight 0 -> 1), so ``sensitivity_sentences`` reads it."""
    moves = simplex_sensitivity(model, base, components)
    return pd.DataFrame({"component": components.numpy(), "data-mean share": base[components].numpy().round(4),
                         "pixel change per slider unit": moves.numpy().round(5)})


def simplex_widget(model: GenerativeModel, base: Tensor, components: Tensor, width: int = 256):
    """One slider per component weight (raw weight 0..1, starting at the data-mean point's), the rest
    held; the weights are renormalised to sum to 1 (``simplex_point``) and decoded. Beside each
    slider, how much its full travel changes the image (``simplex_sensitivity``).
    Returns the container; ``container.sliders`` and ``container.image`` give the parts."""
    import ipywidgets as w

    sliders = [w.FloatSlider(value=float(base[c]), min=0.0, max=1.0, step=0.005,
                             description=f"comp {int(c)}", continuous_update=False) for c in components]
    image = w.Image(format="png", layout=w.Layout(width=f"{width}px"))

    def redraw(_=None) -> None:
        z = simplex_point(base, components, torch.tensor([s.value for s in sliders]))
        image.value = _png(generate(model, z[None])[0, 0])

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    moves = simplex_sensitivity(model, base, components)
    rows = [w.HBox([s, w.Label(f"Δ {float(m):.3f} over 0→1")]) for s, m in zip(sliders, moves)]
    container = w.HBox([w.VBox(rows), image])
    container.sliders, container.image = sliders, image
    return container
