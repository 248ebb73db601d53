"""Sliders over a trained model's latent space, for JupyterLab: thin wrappers of explore.py.

Each widget redraws its image from the same functions the static figures use (``decode_latents``,
``simplex_point``), and shows beside each slider how far it moves the image (``sensitivity``), so the
interactive explorer and a headless run's grids never disagree. Sliders are ordered by that move;
those under 1% of the grey range are folded behind a toggle, so every visible slider does something.
Right of the controls, every explorer shows the same panel (``ImagePanel``): the image, how far it
has moved from where it started, its nearest training image (the memorisation check made visible)
and a button that keeps the image and its latent.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import ipywidgets as w
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cxrnb.labels import LABELS, NO_FINDING
from cxrnb.models.base import GenerativeModel
from cxrnb.models.expost import ExPostSampler
from cxrnb.paths import in_repo
from cxrnb.provenance import Provenance
from cxrnb.study.explore import (
    VISIBLE,
    NearestTraining,
    Walk,
    component_latents,
    decode_latents,
    distinct_latents,
    encode_means,
    labels_for,
    mixture_latents,
    save_view,
    sensitivity,
    simplex_point,
    simplex_sensitivity,
    slerp,
    slider_order,
)

MEAN = -1                          # the explorer's "data mean" base, beside components 0..K-1
LIVE_BELOW = 0.1                   # redraw while dragging when one redraw takes less (seconds)
SAVES = "reports/explorer"         # where "save" writes unless another folder is typed in
# CSS classes a browser test finds the parts by (cxrnb.report.browser)
EXPLORER_CLASS, IMAGE_CLASS, DELTA_CLASS, TIMING_CLASS = "cxrnb-explorer", "cxrnb-image", "cxrnb-delta", "cxrnb-timing"


def _png(image: Tensor) -> bytes:
    """A (H, W) [0, 1] image as PNG bytes, for the widget."""
    buf = io.BytesIO()
    Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buf, format="png")
    return buf.getvalue()


class ImagePanel(w.VBox):
    """The image an explorer shows, its change from the first image shown (``delta``), its nearest
    training image and distance when ``nearest`` is given, and "save" (``save_view``) into the folder
    typed in ``folder`` (relative to the checkout). ``show`` draws a new image; ``latency_s`` is how
    long the last redraw took in the kernel, from the control's change to the PNG handed to the
    browser, and ``timing`` shows it with a redraw count (so every redraw shows on the page, even one
    of a collapsed model whose image does not change)."""

    def __init__(self, name: str, nearest: NearestTraining | None = None, save_dir: str | Path | None = None,
                 prov: Provenance | None = None, width: int = 256):
        self.name, self.nearest, self.prov = name, nearest, prov
        self.image = w.Image(format="png", layout=w.Layout(width=f"{width}px")).add_class(IMAGE_CLASS)
        self.delta = w.Label().add_class(DELTA_CLASS)
        self.timing = w.Label().add_class(TIMING_CLASS)
        self.redraws = 0
        self.nearest_image = w.Image(format="png", layout=w.Layout(width=f"{width // 2}px"))
        self.nearest_label = w.HTML(layout=w.Layout(width=f"{width}px"))       # wraps, unlike a Label
        self.folder = w.Text(value=str(save_dir or SAVES), description="save to")
        self.save_button = w.Button(description="save PNG + latent", icon="save")
        self.saved = w.Label()
        self.save_button.on_click(lambda _: self.save())
        self.start: Tensor | None = None
        self.current: tuple[Tensor, Tensor, dict] | None = None
        self.latency_s = 0.0
        parts = [self.image, w.HBox([self.delta, self.timing])]
        parts += [w.HBox([self.nearest_image, self.nearest_label])] if nearest is not None else []
        super().__init__(parts + [w.HBox([self.folder, self.save_button]), self.saved])

    def show(self, image: Tensor, z: Tensor, began: float, **facts) -> None:
        """Draw ``image`` ((H, W) in [0, 1]), decoded from latent ``z`` at ``began`` (perf_counter)."""
        self.start = image if self.start is None else self.start
        self.current = (image, z, facts)
        self.image.value = _png(image)
        self.delta.value = f"Δ {float((image - self.start).abs().mean()):.4f} from the first image"
        if self.nearest is not None:
            i, d = self.nearest(image)
            self.nearest_image.value = _png(self.nearest.train[i, 0].float() / 255)
            self.nearest_label.value = self.nearest.describe(i, d)
        self.latency_s = time.perf_counter() - began
        self.redraws += 1
        self.timing.value = f"· redraw {self.redraws}: {1000 * self.latency_s:.0f} ms"

    def save(self) -> tuple[Path, Path] | None:
        """Keep the image shown; a folder that cannot be written says so here, not in the kernel log."""
        image, z, facts = self.current
        if not self.folder.value.strip():
            self.saved.value = "type a folder to save into"
            return None
        try:
            png, pt = save_view(image, z, in_repo(self.folder.value), self.name, self.prov, preset=self.name, **facts)
        except OSError as err:
            self.saved.value = f"not saved: {err}"
            return None
        self.saved.value = f"saved {png.name} and {pt.name} in {png.parent}"
        return png, pt


def _sliders_box(sliders: list[w.FloatSlider], notes: list[str], moves: Tensor, visible: float,
                 reset: Callable[[], None], unit: str) -> tuple[w.VBox, list[int], list[int], w.ToggleButton]:
    """Slider rows ordered by how far they move the image, those under ``visible`` folded behind a
    toggle that says how many, and a reset button. Returns the box, the order, the folded, the toggle."""
    shown, folded = slider_order(moves, visible)
    labels = [w.Label(n, layout=w.Layout(width="auto")) for n in notes]
    rows = {i: w.HBox([sliders[i], labels[i]]) for i in range(len(sliders))}
    hidden = w.VBox([rows[i] for i in folded], layout=w.Layout(display="none"))
    toggle = w.ToggleButton(value=False, description=f"{len(folded)} {unit} move it < {visible:.0%} (at the start)",
                            disabled=not folded, tooltip="show the sliders that barely change the image",
                            layout=w.Layout(width="auto"))
    toggle.observe(lambda change: setattr(hidden.layout, "display", "" if change["new"] else "none"),
                   names="value")
    button = w.Button(description="reset", icon="undo")
    button.on_click(lambda _: reset())
    box = w.VBox([rows[i] for i in shown] + [toggle, hidden, button])
    box.reset_button, box.notes = button, labels
    return box, shown, folded, toggle


def _go_live(sliders: list[w.FloatSlider], panel: ImagePanel, live: bool | None,
             redraw: Callable[[], None]) -> bool:
    """Redraw while dragging when asked, or (``live=None``) when a redraw is fast enough: the fastest
    of three (the first pays one-off costs: allocation, caches warming)."""
    if live is None:
        fastest = panel.latency_s
        for _ in range(2):
            redraw()
            fastest = min(fastest, panel.latency_s)
        live = fastest < LIVE_BELOW
    for s in sliders:
        s.continuous_update = live
    return live


def explorer_widget(model: GenerativeModel, mean: Tensor, directions: Tensor, std: Tensor,
                    y: Tensor | None = None, limit: float = 3.0, seed: int = 0, width: int = 256,
                    nearest: NearestTraining | None = None, save_dir: str | Path | None = None,
                    prov: Provenance | None = None, name: str | None = None, live: bool | None = None,
                    visible: float = VISIBLE, mixture: ExPostSampler | None = None) -> w.HBox:
    """Sliders (one per direction, in std units), for a mixture a component menu, and for a
    conditional model a label menu, beside an ``ImagePanel``.

    The displayed latent is ``base + sum_i slider_i * std[i] * directions[i]``, where the base is
    ``mean`` or, when a component is chosen, a fixed draw (``seed``) from that component; the menu
    lists only components that decode to distinct images (``distinct_latents``) and says how many
    it folded. A model without a mixture prior gets the same menu over the components of its ex-post
    mixture sampler (``mixture``, notebook 07's GMM sampler), based at their means. A conditional
    model draws the image for one label (one-hot) picked from the menu, or for ``y`` as given (the
    menu's first entry when ``y`` is passed; else it starts at "No Finding"), so only the label
    changes between picks. Beside each slider, how much one slider unit changes the
    image at the mean for the starting label (``sensitivity``); the rows are ordered by it.

    Returns the container; ``.sliders`` (by direction, not display order), ``.order`` and ``.folded``
    (direction indices), ``.fold_toggle``, ``.reset``, ``.menu``, ``.components_note``, ``.labels``,
    ``.notes`` (the Δ labels, by direction), ``.panel``, ``.image`` and ``.live`` give the parts.
    """
    name = name or model.preset or type(model).__name__
    sliders = [w.FloatSlider(value=0.0, min=-limit, max=limit, step=0.1, description=f"dir {i + 1}")
               for i in range(len(directions))]
    k = model.n_components
    given = "labels given"
    labels = w.Dropdown(options=([given] if y is not None else []) + list(LABELS),
                        value=given if y is not None else NO_FINDING, description="label")

    def label() -> Tensor | None:
        return y if not model.conditional or labels.value == given else labels_for(model, labels.value)

    if k:                                   # the prior's components: a fixed draw of each
        bases = torch.cat([component_latents(model, c, 1, seed) for c in range(k)]).float().cpu()
        names, what = [f"component {c}" for c in range(k)], "components"
    elif mixture is not None:               # the ex-post mixture's components: their means
        bases, weights = mixture_latents(mixture)
        names, what = [f"GMM component {c} ({float(p):.0%})" for c, p in enumerate(weights)], "GMM components"
    else:
        bases, names, what = None, [], ""
    kept = distinct_latents(model, bases, label(), visible) if bases is not None else []
    menu = w.Dropdown(options=[("data mean", MEAN)] + [(names[c], c) for c in kept],
                      value=MEAN, description="base")   # (a None value would show as a blank menu)
    note = w.HTML(f"{len(names) - len(kept)} of {len(names)} {what} folded: each decodes within {visible:.0%} "
                  f"of a listed one" if names else "", layout=w.Layout(width="300px"))
    panel = ImagePanel(name, nearest, save_dir, prov, width)
    holding = [False]

    def base() -> Tensor:
        return mean if menu.value == MEAN else bases[menu.value]

    def redraw(_=None) -> None:
        if holding[0]:
            return
        began = time.perf_counter()
        values = [s.value for s in sliders]
        z = base() + (torch.tensor(values) * std) @ directions
        panel.show(decode_latents(model, z[None], label())[0, 0], z, began, sliders=values,
                   component=None if menu.value == MEAN else menu.value,
                   label=labels.value if model.conditional else None, y=label())

    def reset() -> None:
        holding[0] = True
        try:
            for s in sliders:
                s.value = 0.0
            menu.value = MEAN
            labels.value = labels.options[0] if y is not None else NO_FINDING
        finally:
            holding[0] = False
        redraw()

    for control in sliders + [menu, labels]:
        control.observe(redraw, names="value")
    redraw()
    moves = sensitivity(model, mean, directions, std, label())
    notes = [f"Δ {float(m):.3f} per unit" for m in moves]
    box, order, folded, toggle = _sliders_box(sliders, notes, moves, visible, reset, "directions")
    controls = [box] + ([menu, note] if names else []) + ([labels] if model.conditional else [])
    container = w.HBox([w.VBox(controls), panel]).add_class(EXPLORER_CLASS)
    container.sliders, container.order, container.folded, container.fold_toggle = sliders, order, folded, toggle
    container.reset, container.notes = box.reset_button, box.notes
    container.menu, container.components_note = (menu if names else None), note
    container.labels = labels if model.conditional else None
    container.panel, container.image = panel, panel.image
    container.live = _go_live(sliders, panel, live, redraw)
    return container


def simplex_widget(model: GenerativeModel, base: Tensor, components: Tensor, width: int = 256,
                   nearest: NearestTraining | None = None, save_dir: str | Path | None = None,
                   prov: Provenance | None = None, name: str | None = None, live: bool | None = None,
                   visible: float = VISIBLE) -> w.HBox:
    """One slider per component weight (raw weight 0..1, starting at the data-mean point's), the rest
    held; the weights are renormalised to sum to 1 (``simplex_point``) and decoded. Beside each
    slider, how much its full travel changes the image (``simplex_sensitivity``); rows ordered by it.
    Returns the container, with the parts named as ``explorer_widget``'s."""
    name = name or model.preset or type(model).__name__
    start = [float(base[c]) for c in components]
    sliders = [w.FloatSlider(value=v, min=0.0, max=1.0, step=0.005, description=f"comp {int(c)}")
               for v, c in zip(start, components)]
    panel = ImagePanel(name, nearest, save_dir, prov, width)
    holding = [False]

    def redraw(_=None) -> None:
        if holding[0]:
            return
        began = time.perf_counter()
        weights = [s.value for s in sliders]
        z = simplex_point(base, components, torch.tensor(weights))
        panel.show(decode_latents(model, z[None])[0, 0], z, began, weights=dict(zip(components.tolist(), weights)))

    def reset() -> None:
        holding[0] = True
        try:
            for s, v in zip(sliders, start):
                s.value = v
        finally:
            holding[0] = False
        redraw()

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    moves = simplex_sensitivity(model, base, components)
    notes = [f"Δ {float(m):.3f} over 0→1" for m in moves]
    box, order, folded, toggle = _sliders_box(sliders, notes, moves, visible, reset, "components")
    container = w.HBox([box, panel]).add_class(EXPLORER_CLASS)
    container.sliders, container.order, container.folded, container.fold_toggle = sliders, order, folded, toggle
    container.reset, container.notes, container.panel, container.image = box.reset_button, box.notes, panel, panel.image
    container.live = _go_live(sliders, panel, live, redraw)
    return container


def interpolation_widget(model: GenerativeModel, images: Tensor, n_choices: int = 24, width: int = 256,
                         nearest: NearestTraining | None = None, save_dir: str | Path | None = None,
                         prov: Provenance | None = None, name: str | None = None,
                         live: bool | None = None) -> w.HBox:
    """Pick two real images (uint8 (N, 1, S, S), e.g. the test split; the first ``n_choices``) and a
    fraction t: the decoded great-circle point between their posterior means (``slerp``), beside
    the two real images; beside t, how different the decodes at its two ends are. Returns the
    container; ``.a``, ``.b``, ``.t``, ``.note``, ``.panel``, ``.image``."""
    name = name or model.preset or type(model).__name__
    images = images[:n_choices]
    means = encode_means(model, images, progress=False)
    choices = [(f"image {i}", i) for i in range(len(images))]
    a = w.Dropdown(options=choices, value=0, description="from")
    b = w.Dropdown(options=choices, value=min(1, len(images) - 1), description="to")
    t = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="t")
    ends = [w.Image(format="png", layout=w.Layout(width=f"{width // 2}px")) for _ in range(2)]
    panel = ImagePanel(name, nearest, save_dir, prov, width)

    note = w.Label(layout=w.Layout(width="auto"))
    pair = [None]

    def new_pair() -> None:
        """The two real images and how different their decodes are: once per pair, not per t."""
        for end, pick in zip(ends, (a, b)):
            end.value = _png(images[pick.value, 0].float() / 255)
        decoded = decode_latents(model, torch.stack([means[a.value], means[b.value]]))[:, 0]
        note.value = f"Δ {float((decoded[1] - decoded[0]).abs().mean()):.3f} over 0→1"
        pair[0] = (a.value, b.value)

    def redraw(_=None) -> None:
        began = time.perf_counter()
        if pair[0] != (a.value, b.value):
            new_pair()
        z = slerp(means[a.value], means[b.value], torch.tensor([t.value]))[0]
        panel.show(decode_latents(model, z[None])[0, 0], z, began, between=(a.value, b.value), t=t.value)

    for control in (a, b, t):
        control.observe(redraw, names="value")
    redraw()
    container = w.HBox([w.VBox([a, b, w.HBox([t, note]), w.HBox(ends)]), panel]).add_class(EXPLORER_CLASS)
    container.a, container.b, container.t, container.note = a, b, t, note
    container.panel, container.image = panel, panel.image
    container.live = _go_live([t], panel, live, redraw)
    return container


def walk_widget(walk: Walk, width: int = 256, save_dir: str | Path | None = None,
                nearest: bool = True, mixture: ExPostSampler | None = None) -> w.HBox:
    """The sliders of a ``Walk`` (explore.walk): one per component weight on the simplex, else one
    per direction, with the label the walk was drawn with; beside the image its nearest training
    image among the run's own (``nearest``), and "save" into ``save_dir``, with the run's provenance;
    ``mixture``: the run's ex-post sampler, whose components then fill the base menu."""
    run = walk.run
    keep = dict(nearest=NearestTraining.from_run(run) if nearest else None, save_dir=save_dir,
                prov=run.prov, name=run.preset, width=width)
    if walk.on_simplex:
        return simplex_widget(run.model, *walk.axes, **keep)
    return explorer_widget(run.model, *walk.axes, y=walk.y, mixture=mixture, **keep)
