"""Sliders over a trained model's latent space, for JupyterLab: thin wrappers of explore.py.

Each widget redraws its image from the same functions the static figures use (``decode_latents``,
``simplex_point``), and shows beside each slider how far it moves the image (``sensitivity``), so the
interactive explorer and a headless run's grids never disagree.
"""

from __future__ import annotations

import io

import ipywidgets as w
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cxrnb.labels import LABELS, NO_FINDING
from cxrnb.models.base import GenerativeModel
from cxrnb.study.explore import (
    Walk,
    component_latents,
    decode_latents,
    labels_for,
    sensitivity,
    simplex_point,
    simplex_sensitivity,
)

MEAN = -1                          # the explorer's "data mean" base, beside components 0..K-1


def _png(image: Tensor) -> bytes:
    """A (H, W) [0, 1] image as PNG bytes, for the widget."""
    buf = io.BytesIO()
    Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buf, format="png")
    return buf.getvalue()


def explorer_widget(model: GenerativeModel, mean: Tensor, directions: Tensor, std: Tensor,
                    y: Tensor | None = None, limit: float = 3.0, seed: int = 0, width: int = 256) -> w.HBox:
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
    sliders = [w.FloatSlider(value=0.0, min=-limit, max=limit, step=0.1, description=f"dir {i + 1}",
                             continuous_update=False) for i in range(len(directions))]
    k = model.n_components
    menu = w.Dropdown(options=[("data mean", MEAN)] + [(f"component {c}", c) for c in range(k)],
                      value=MEAN, description="base")   # (a None value would show as a blank menu)
    given = "labels given"
    labels = w.Dropdown(options=([given] if y is not None else []) + list(LABELS),
                        value=given if y is not None else NO_FINDING, description="label")
    image = w.Image(format="png", layout=w.Layout(width=f"{width}px"))

    def label() -> Tensor | None:
        return y if not model.conditional or labels.value == given else labels_for(model, labels.value)

    def base() -> Tensor:
        return mean if menu.value == MEAN else component_latents(model, menu.value, 1, seed)[0].float().cpu()

    def redraw(_=None) -> None:
        offsets = torch.tensor([s.value for s in sliders]) * std
        z = base() + offsets @ directions
        image.value = _png(decode_latents(model, z[None], label())[0, 0])

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


def simplex_widget(model: GenerativeModel, base: Tensor, components: Tensor, width: int = 256) -> w.HBox:
    """One slider per component weight (raw weight 0..1, starting at the data-mean point's), the rest
    held; the weights are renormalised to sum to 1 (``simplex_point``) and decoded. Beside each
    slider, how much its full travel changes the image (``simplex_sensitivity``).
    Returns the container; ``container.sliders`` and ``container.image`` give the parts."""
    sliders = [w.FloatSlider(value=float(base[c]), min=0.0, max=1.0, step=0.005,
                             description=f"comp {int(c)}", continuous_update=False) for c in components]
    image = w.Image(format="png", layout=w.Layout(width=f"{width}px"))

    def redraw(_=None) -> None:
        z = simplex_point(base, components, torch.tensor([s.value for s in sliders]))
        image.value = _png(decode_latents(model, z[None])[0, 0])

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    moves = simplex_sensitivity(model, base, components)
    rows = [w.HBox([s, w.Label(f"Δ {float(m):.3f} over 0→1")]) for s, m in zip(sliders, moves)]
    container = w.HBox([w.VBox(rows), image])
    container.sliders, container.image = sliders, image
    return container


def walk_widget(walk: Walk, width: int = 256) -> w.HBox:
    """The sliders of a ``Walk`` (explore.walk): one per component weight on the simplex, else one
    per direction, with the label the walk was drawn with."""
    if walk.on_simplex:
        return simplex_widget(walk.run.model, *walk.axes, width=width)
    return explorer_widget(walk.run.model, *walk.axes, y=walk.y, width=width)
