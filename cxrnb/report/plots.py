"""Every figure of the study, and the one way to save it: with its provenance printed on it.

Figures are built as plain ``matplotlib.figure.Figure`` objects, not through pyplot, so nothing
depends on a display or a backend (headless runs render with Agg when saving) and no figure leaks
into pyplot's global registry. Notebooks call ``publish``, which saves the figure and
returns the saved PNG for display, so what a reader sees is the file in reports/.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from cxrnb.errors import CxrnbError
from cxrnb.evaluation.evaluate import FD_METRICS, LADDER, Kind
from cxrnb.paths import atomic
from cxrnb.provenance import Provenance
from cxrnb.report.numbers import trend

DPI = 100             # small PNGs: the figures are for reading, not printing
FOOTER_FONTSIZE = 7


def save_figure(fig: Figure, path: str | Path, prov: Provenance) -> Path:
    """Stamp ``prov.line()`` under the figure, write ``path`` (PNG) and ``path.json`` beside it.

    Both are written atomically (``paths.atomic``), so a failure leaves nothing half-written. The
    figure is closed if pyplot manages it.
    """
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    chars_per_line = max(40, int(fig.get_figwidth() * 120 / FOOTER_FONTSIZE))
    footer = textwrap.fill(prov.line(), chars_per_line, break_on_hyphens=False,
                           break_long_words=False)
    for old in [t for t in fig.texts if t.get_gid() == "provenance"]:
        old.remove()                            # saving twice restamps instead of stacking
    # Just below the axes area; bbox_inches="tight" grows the canvas to include it.
    fig.text(0.01, -0.01, footer, ha="left", va="top", fontsize=FOOTER_FONTSIZE, color="0.3",
             gid="provenance")
    try:
        with atomic(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        prov.save_json(path)
    finally:
        if fig.canvas.manager is not None:      # a pyplot figure: release it
            import matplotlib.pyplot as plt
            plt.close(fig)
    return path


def publish(fig: Figure, path: str | Path, prov: Provenance):
    """``save_figure``, then the saved PNG as an IPython image: a notebook shows exactly the file
    that lands in reports/, provenance footer included."""
    from IPython.display import Image

    return Image(filename=str(save_figure(fig, path, prov)))


def tile(images: Tensor | np.ndarray, nrow: int = 8, padding: int = 2) -> Tensor:
    """(N, 1, H, W) images in [0, 1] -> one (H', W') greyscale grid, ``nrow`` images per row,
    separated by white lines."""
    images = torch.as_tensor(images, dtype=torch.float32).detach().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)[0]


TITLE_WIDTH = 28                 # characters per line of a panel title (a 3.2-inch panel at 10 pt)


def _show(ax, grid: Tensor, title: str | None = None) -> None:
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def image_grid(images: Tensor | np.ndarray, nrow: int = 8, title: str | None = None) -> Figure:
    """A grid of samples or real images, e.g. a training run's sample sheet."""
    grid = tile(images, nrow)
    h, w = grid.shape
    width = float(np.clip(w / 48, 4, 10))      # keep the grid's aspect: no empty band below it
    fig = Figure(figsize=(width, width * h / w + (0.4 if title else 0.1)), layout="constrained")
    _show(fig.add_subplot(), grid, title)
    return fig


def _panel_grid(n: int, per_row: int, caller: str) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels, at most ``per_row`` to a row."""
    if n == 0:
        raise CxrnbError(f"{caller} got no panels to draw (an empty dict of image sets)")
    if per_row < 1:
        raise CxrnbError(f"{caller} needs at least one panel per row, not per_row={per_row}")
    cols = min(n, per_row)
    return math.ceil(n / cols), cols


PANEL_WIDTH = 3.2                # inches per panel of sample_rows and nearest_pairs


def sample_rows(rows: dict[str, Tensor], title: str | None = None, per_row: int = 6) -> Figure:
    """Panels side by side, one per label: e.g. samples at iterations 0, 100 and 250 (paper Fig. 6, 8).

    More than ``per_row`` panels wrap onto further rows, and long labels wrap onto further lines, so
    sixteen models' samples stay readable rather than one strip of overlapping titles. Each panel is
    a square grid, so a row is about as tall as a panel is wide: no empty bands between rows.
    """
    lines, cols = _panel_grid(len(rows), per_row, "sample_rows")
    fig = Figure(figsize=(PANEL_WIDTH * cols, 3.4 * lines + (0.4 if title else 0.1)), layout="constrained")
    for i, (label, images) in enumerate(rows.items()):
        nrow = math.ceil(math.sqrt(len(images)))
        _show(fig.add_subplot(lines, cols, i + 1), tile(images, nrow), textwrap.fill(label, TITLE_WIDTH))
    if title:
        fig.suptitle(title)
    return fig


def smoothed(y: pd.Series, window: int) -> pd.Series:
    """Trailing moving average over ``window`` logged steps (window <= 1: unchanged)."""
    return y.rolling(window, min_periods=1).mean() if window > 1 else y


def loss_curves(history: pd.DataFrame | dict[str, pd.DataFrame], keys: list[str] | tuple[str, ...],
                title: str | None = None, smooth: int = 1, logy: tuple[str, ...] = (),
                levels: dict[str, float] | None = None) -> Figure:
    """One panel per logged quantity, one line per run (paper Fig. 5: the beta sweep; Fig. 9: D and G).

    ``history`` is a training history (columns ``step`` and the logged keys) or a dict of them by
    label. With ``smooth`` > 1 the raw values are drawn faintly under their moving average. Keys in
    ``logy`` get a symmetric-log y axis (values spanning 0 to hundreds, such as the KL of collapsed
    and working models side by side). ``levels`` draws a dashed reference level in a key's panel
    (e.g. the mean image's error under the reconstruction errors).
    """
    runs = {"": history} if isinstance(history, pd.DataFrame) else history
    fig = Figure(figsize=(4.5 * len(keys), 3.4))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for label, df in runs.items():
            if key not in df:
                continue
            y = df[key].dropna()
            x = df.loc[y.index, "step"] if "step" in df else y.index
            line, = ax.plot(x, smoothed(y, smooth), label=label or None, lw=1.2,
                            marker="." if len(y) < 40 else None)
            if smooth > 1:
                ax.plot(x, y, color=line.get_color(), alpha=0.25, lw=0.6)
        if key in logy:
            ax.set_yscale("symlog", linthresh=0.1)
        if levels and key in levels:
            ax.axhline(levels[key], color="0.4", ls="--", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def labelled_rows(rows: dict[str, Tensor], title: str | None = None) -> Figure:
    """One row of images per label, the label on the left: e.g. the same test images and each
    model's reconstructions of them, or a few samples of each model, one model per row."""
    if not rows:
        raise CxrnbError("labelled_rows got no rows to draw (an empty dict of image sets)")
    n = max(len(v) for v in rows.values())
    fig = Figure(figsize=(1.0 * n + 2.2, 1.05 * len(rows) + (0.4 if title else 0.1)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows.items()):
        _show(ax, tile(images, nrow=n))
        ax.set_axis_on()
        ax.set_xticks([]), ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def kl_spectrum(kl_per_dim: dict[str, np.ndarray], title: str | None = None, floor: float = 1e-4) -> Figure:
    """Each model's KL per latent dimension, sorted from largest, on a log scale: a collapsed
    posterior is a flat line at ~0 (drawn at ``floor``), a working one a few dimensions that carry nats."""
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for label, kl in kl_per_dim.items():
        ax.plot(np.maximum(np.sort(np.asarray(kl))[::-1], floor), label=label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("latent dimension, sorted by KL")
    ax.set_ylabel(f"KL (nats, floor {floor:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def recon_pairs(inputs: Tensor, recons: Tensor,
                title: str | None = "input (top) and reconstruction (bottom)") -> Figure:
    """Real images above their reconstructions, column by column."""
    n = len(inputs)
    grid = tile(torch.cat([torch.as_tensor(inputs), torch.as_tensor(recons)]), nrow=n)
    fig = Figure(figsize=(min(12, 1.2 * n), 3))
    _show(fig.add_subplot(), grid, title)
    return fig


def nearest_pairs(pairs: dict[str, tuple[Tensor, Tensor]], title: str | None = None,
                  per_row: int = 6) -> Figure:
    """One panel per label, each with images (top row) above their matches (bottom row): e.g. a
    model's samples above their nearest training images. Panels wrap onto rows of ``per_row`` and
    long labels onto further lines, as in ``sample_rows``."""
    lines, cols = _panel_grid(len(pairs), per_row, "nearest_pairs")
    across = max(len(top) for top, _ in pairs.values())
    height = (PANEL_WIDTH - 0.2) * 2 / across + 0.5          # a strip two images tall, and its title
    fig = Figure(figsize=(PANEL_WIDTH * cols, height * lines + (0.4 if title else 0.1)), layout="constrained")
    for i, (label, (top, bottom)) in enumerate(pairs.items()):
        grid = tile(torch.cat([torch.as_tensor(top).float(), torch.as_tensor(bottom).float()]),
                    nrow=len(top))
        _show(fig.add_subplot(lines, cols, i + 1), grid, textwrap.fill(label, TITLE_WIDTH))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def label_bar(counts: pd.Series, title: str | None = None) -> Figure:
    """Horizontal bars of image counts per label, largest at the top, each bar annotated."""
    counts = counts.sort_values()
    fig = Figure(figsize=(7, 0.3 * len(counts) + 1.2))
    ax = fig.add_subplot()
    ax.barh(counts.index.astype(str), counts.to_numpy(), color="#4c72b0")
    for y, v in enumerate(counts.to_numpy()):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel("images")
    ax.margins(x=0.15)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def cooccurrence_heatmap(matrix: pd.DataFrame, title: str | None = None) -> Figure:
    """A label-by-label table (counts or rates) as an annotated heatmap."""
    integer = np.issubdtype(matrix.to_numpy().dtype, np.integer)
    fig = Figure(figsize=(0.55 * len(matrix.columns) + 2.5, 0.5 * len(matrix) + 1.5))
    ax = fig.add_subplot()
    sns.heatmap(matrix, ax=ax, annot=True, fmt="d" if integer else ".2f", cmap="viridis",
                annot_kws={"fontsize": 6}, cbar_kws={"shrink": 0.6})
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def hist(series: pd.Series | np.ndarray, bins: int = 50, title: str | None = None,
         xlabel: str | None = None) -> Figure:
    """A histogram, e.g. images per patient or patient age."""
    values = pd.Series(series).dropna()
    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_xlabel(xlabel or (series.name if isinstance(series, pd.Series) else None) or "value")
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def ladder_plot(rows: pd.DataFrame, metric_names: tuple[str, ...] = FD_METRICS,
                title: str | None = None) -> Figure:
    """One panel per feature space: every set's Fréchet distance (mean ± std, log scale), the
    calibration ladder's rungs in grey, the models in colour and the real-vs-real floor dashed, so
    a model's number is read against known degradations. ``rows``: ``evaluate.evaluate`` output."""
    fd = rows[rows.metric.isin(metric_names) & rows["mean"].notna()]
    spaces = list(dict.fromkeys(fd.space))
    fig = Figure(figsize=(6 * len(spaces), 0.35 * fd.model.nunique() + 1.5), layout="constrained")
    axes = fig.subplots(1, len(spaces), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        part = fd[fd.space == space].sort_values("mean")
        floor = part[part.kind == Kind.REFERENCE]
        part = part[part.kind != Kind.REFERENCE]
        y = np.arange(len(part))
        colours = ["0.55" if k == Kind.LADDER else "C0" for k in part.kind]
        ax.errorbar(part["mean"].clip(lower=1e-6), y, xerr=part["std"].fillna(0), fmt="none",
                    ecolor="0.3", capsize=2)
        ax.scatter(part["mean"].clip(lower=1e-6), y, c=colours, zorder=3)
        for f in floor["mean"]:
            ax.axvline(max(f, 1e-6), ls="--", c="C3", label="real vs real (floor at this n)")
        ax.set_yticks(y, [m.replace(LADDER, "▸ ") for m in part.model])
        ax.set_xscale("log")
        ax.set_xlabel(f"{part.metric.iloc[0]} ({space}), lower is better")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{space}: models (blue) on the ladder (grey ▸)")
    if title:
        fig.suptitle(title)
    return fig


def quality_vs_compute(curves: pd.DataFrame, rungs: pd.DataFrame, title: str | None = None,
                       extend: float = 10.0, floor: float | None = None) -> Figure:
    """FD against measured training seconds, one line per model (mean ± std over subsets at each
    snapshot), the calibration ladder's rungs as grey horizontal lines: where a curve crosses a rung
    is the compute that bought that quality. Beyond the longest run, up to ``extend`` times it and on
    a grey background, each curve's tail extended as ``numbers.trend`` draws it (dashed): the
    extrapolation of results.md's crossing sentence. ``curves``: ``scoring.quality_curves``;
    ``rungs``: the evaluation's ladder rows (model, mean) in the same space; ``floor``: the real-vs-real
    FD (``results.real_floor``), drawn solid: no set of samples scores below held-out real images, so
    the dashed lines stop there."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    measured = max(curves.seconds.max(), 1.0)
    right = measured * extend
    for i, (model, part) in enumerate(curves.groupby("model", sort=False)):
        part = part.sort_values("seconds")
        ax.errorbar(part.seconds, part.FD, yerr=part["FD sd"].fillna(0), marker="o", ms=4, capsize=2,
                    color=f"C{i}", label=model)
        tail = trend(part.seconds, part.FD)
        if tail is not None and extend > 1:
            end = right
            if floor is not None and tail.slope < 0:      # where the line reaches the floor, it stops
                end = min(right, max(tail.last, (floor / np.exp(tail.level)) ** (1 / tail.slope)))
            x = np.geomspace(tail.last, end, 40)
            ax.plot(x, np.exp(tail.level) * x ** tail.slope, color=f"C{i}", lw=1, ls="--")
    if extend > 1:
        ax.axvspan(measured, right, color="0.93", zorder=0)
        ax.text(measured, 0.99, " extrapolated", fontsize=7, color="0.4", va="top", transform=ax.get_xaxis_transform())
    for _, rung in rungs.iterrows():
        ax.axhline(rung["mean"], color="0.6", lw=0.8, ls=":")
        ax.text(right, rung["mean"], " " + rung.model.removeprefix(LADDER), fontsize=7, color="0.4", va="center")
    if floor is not None:
        ax.axhline(floor, color="0.3", lw=1)
        ax.text(right, floor, " real vs real", fontsize=7, color="0.3", va="center")
    ax.set_xscale("symlog", linthresh=1.0)       # the first snapshot is the untrained model, at 0 s
    ax.set_xlim(0, right)
    ax.set_yscale("log")
    ax.set_xlabel("training seconds (measured; symlog)")
    ax.set_ylabel("FD, lower is better")
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title)
    return fig
