"""The sentences that close a notebook section, computed from that run's numbers.

A hand-written conclusion goes stale the moment a setting changes; these functions read the table a
notebook has just produced and say only what its numbers support, including when they support
nothing (a run too short to separate two explanations says so).
"""

from __future__ import annotations

import pandas as pd
from torch import Tensor

from cxrnb.evaluation.label_evidence import movement
from cxrnb.labels import NO_FINDING
from cxrnb.models.base import Family
from cxrnb.models.losses import Reduction
from cxrnb.report.tables import write_markdown

FAITHFUL = (Reduction.PAPER, Reduction.UPSTREAM)      # the paper's text and the authors' code


def _row_sentence(r) -> str:
    state = "**collapsed**" if r.collapsed else "**not collapsed**"
    return (f"- **{r.preset}** ({r.loss} loss, β = {r.beta:g}, effective β ≈ {r.effective_beta:,.3g}): "
            f"{r.active_units} active units, KL {r.kl:.3g} nats per image, held-out MSE {r.test_mse:.4f} "
            f"against {r.mean_image_mse:.4f} for the mean training image; samples' MS-SSIM "
            f"{r.sample_ms_ssim:.3f} (real images {r.real_ms_ssim:.3f}): {state}.")


def _gain(r) -> str:
    """'12% better than' / '3% worse than' (the mean image's held-out error)."""
    change = 1 - r.test_mse / r.mean_image_mse
    return f"{abs(change):.0%} {'better' if change >= 0 else 'worse'} than"


def collapse_findings(table: pd.DataFrame) -> str:
    """Which runs of ``study.summary`` collapsed, and what the contrast between losses shows.

    "Collapsed" is ``Diagnostics.collapsed``: no active unit, or reconstructions not 5% better than
    the mean image. The loss is blamed only through an equal-length twin: a run of the same
    architecture (parameter count), prior and data, trained as long, that differs in the loss alone.
    The Dirichlet VAE is left out of that search (its prior differs too); ``dirichlet_findings``
    compares it with the Gaussian ELBO VAE.
    """
    lines = [_row_sentence(r) for r in table.itertuples()]
    dead, alive = table[table.collapsed], table[~table.collapsed]
    lines.append(f"\nCollapsed: {', '.join(dead.preset) or 'none'}. "
                 f"Not collapsed: {', '.join(alive.preset) or 'none'}.")
    elbo = alive[(alive.loss == Reduction.ELBO) & (alive.family != Family.DIRVAE if "family" in alive else True)]
    if elbo.empty:
        lines.append("\nNo ELBO run escaped collapse in this run: it is too short to tell the loss from the prior; "
                     "train them longer (`epochs_for`).")
        return "\n".join(lines)
    best = elbo.sort_values("test_mse").iloc[0]
    faithful = table[table.loss.isin(FAITHFUL)]
    twins = faithful[(faithful.parameters == best.parameters) & (faithful.iterations >= best.iterations)]
    for t in twins.itertuples():
        decisive = best.kl >= 10 * max(t.kl, 1e-9) and best.test_mse < t.test_mse
        lines.append(
            f"\n{t.preset} trained as long as {best.preset} ({best.iterations} iterations) with the same architecture "
            f"({best.parameters:,} parameters), prior and data; only the weighting of the loss differs (effective "
            f"β ≈ {t.effective_beta:,.3g} against {best.effective_beta:g}). Its latent carries {t.kl:.3g} nats per "
            f"image against {best.kl:.3g}, and its reconstructions are {_gain(t)} the mean image against "
            f"{_gain(best)}" + (": here the loss scaling, not the Gaussian prior, decides how much of the image the "
                                "model keeps in its latent." if decisive else "."))
    shorter = faithful[faithful.iterations < best.iterations]
    if len(shorter):
        lines.append(f"\nCaveat: {', '.join(shorter.preset)} trained fewer iterations than {best.preset} "
                     f"({shorter.iterations.max()} or fewer against {best.iterations}); for them 'collapsed' may also "
                     "mean 'not trained yet' (the KL curves above show whether their KL had already gone to zero).")
    return "\n".join(lines)


def dirichlet_findings(table: pd.DataFrame, dirichlet: str = "DirVAE-elbo",
                       gaussian: str = "VAE-elbo-beta1") -> str:
    """The Dirichlet-prior VAE against the Gaussian ELBO VAE of ``study.summary``: held-out error
    (each against the mean image), active units (each on its own rule, diagnostics.py), KL and
    sample diversity (mean MS-SSIM of sample pairs; nearer the real images' value is better)."""
    rows = table.set_index("preset")
    missing = [name for name in (dirichlet, gaussian) if name not in rows.index]
    if missing:
        return f"No Dirichlet-prior comparison: {', '.join(missing)} not trained in this run."
    d, g = rows.loc[dirichlet], rows.loc[gaussian]
    lower = "lower" if d.test_mse < g.test_mse else "higher"
    gap = lambda r: abs(r.sample_ms_ssim - r.real_ms_ssim)   # noqa: E731
    nearer = "nearer to" if gap(d) < gap(g) else "further from"
    dims = lambda r: f" of {int(r.latent_dim)}" if "latent_dim" in rows and pd.notna(r.latent_dim) else ""  # noqa: E731
    text = (f"**{dirichlet}** (Dirichlet prior) against **{gaussian}** (N(0, I) prior), same encoder and decoder "
            f"widths and the same per-image ELBO: held-out MSE {d.test_mse:.4f} against {g.test_mse:.4f}, "
            f"{lower} ({_gain(d)} the mean image against {_gain(g)}); {d.active_units}{dims(d)} active "
            f"components (centred log-ratio rule) against {g.active_units}{dims(g)} active units (Burda's rule); "
            f"KL {d.kl:.3g} against {g.kl:.3g} nats per image; samples' MS-SSIM {d.sample_ms_ssim:.3f} against "
            f"{g.sample_ms_ssim:.3f}, {nearer} the real images' {d.real_ms_ssim:.3f}"
            + (" (so more alike each other than the Gaussian VAE's)." if d.sample_ms_ssim > g.sample_ms_ssim
               else " (so less alike each other than the Gaussian VAE's)."))
    if d.collapsed:
        text += f" {dirichlet} **collapsed** in this run (diagnostics.py's rule)."
    if d.iterations != g.iterations:
        text += (f" Caveat: they trained {d.iterations} and {g.iterations} iterations, so the gap mixes the prior "
                 "with the training length.")
    return text


def best_non_collapsed(table: pd.DataFrame) -> str | None:
    """The preset with the lowest held-out MSE among those that did not collapse (None if all did)."""
    alive = table[~table.collapsed]
    return None if alive.empty else str(alive.sort_values("test_mse").iloc[0].preset)


# Training steps DDPMs usually get: Ho et al. 2020 trained 800k (CIFAR-10) and 500k (256 px)
# iterations; 10^5 is the order of magnitude below which published samples are still improving.
USUAL_DDPM_STEPS = 100_000


def convergence(loss: pd.Series, usual: int = USUAL_DDPM_STEPS, window: float = 0.2) -> str:
    """How far a run of training losses (indexed by iteration) is from converged: the mean loss over
    the last ``window`` of iterations against the ``window`` before it, and whether the difference
    exceeds twice its standard error (batch noise); iterations trained against ``usual``."""
    loss = loss.dropna()
    done = int(loss.index.max())
    k = max(1, int(len(loss) * window))
    if k < 2 or len(loss) < 2 * k:                       # a window needs 2 values for its noise
        return (f"The run trained {done:,} iterations, too few to compare two windows of its loss; that is "
                f"{100 * done / usual:.2g}% of the ~{usual:,} iterations DDPMs usually get.")
    last, before = loss.iloc[-k:], loss.iloc[-2 * k:-k]
    diff = before.mean() - last.mean()
    noise = 2 * (last.var(ddof=1) / k + before.var(ddof=1) / k) ** 0.5
    state = ("**still falling**" if diff > noise else "**rising**" if diff < -noise
             else "**flat within batch noise**")
    return (f"The run trained {done:,} iterations, {100 * done / usual:.2g}% of the ~{usual:,} iterations "
            f"DDPMs usually get. Its loss over the last {window:.0%} of iterations (mean {last.mean():.4f}) "
            f"against the {window:.0%} before (mean {before.mean():.4f}) changed by {-diff / before.mean():+.1%}, "
            f"with a noise level of ±{noise / before.mean():.1%}: {state}"
            + (" — far from converged; the samples above show an early stage of training, not what a "
               "diffusion model can do." if done < usual / 10 or diff > noise else "."))


def sampling_cost(seconds_per_image: float, steps: int, n: int, device: str) -> str:
    """The sentence that states what a sample costs."""
    return (f"Sampling took **{seconds_per_image:.3g} s per image** with {steps} DDIM steps ({n} images timed on "
            f"{device}), i.e. {seconds_per_image / steps * 1000:.3g} ms per image per denoising step: one "
            f"sample costs {steps} forward passes of the U-Net, where a GAN or VAE decoder needs one.")


def label_findings(rows: dict[str, Tensor], preset: str, iterations: int, epochs: float,
                   reference: str = NO_FINDING, visible: float = 0.01) -> str:
    """How much the label moves a conditional generator's images, from ``study.samples_per_label``'s
    rows (the same latents in every row), beside how much the latent moves them: a label whose
    change is far below the latent's is one the generator has not learnt to draw yet. Cut-offs:
    below ``visible`` (1% of the grey range, about 2.5 grey levels) the label is ignored; below a
    quarter of the latent's change it is weak; otherwise it visibly changes the image."""
    m = movement(rows, reference)
    verdict = ("the generator ignores the label so far" if m.label < visible else
               "the label changes the image far less than the latent does: the conditioning is weak at "
               "this budget" if m.label < m.latent / 4 else "the label visibly changes the image")
    return (f"After {iterations} iterations ({epochs:g} epochs), switching the label from {reference} to a "
            f"finding with the latent held fixed changes {preset}'s image by {m.label:.3f} of the grey range on "
            f"average (mean absolute difference; most for {m.most}, {m.per_label[m.most]:.3f}, least for "
            f"{m.least}, {m.per_label[m.least]:.3f}), against {m.latent:.3f} between two latents of one label: "
            f"{verdict}.")


def save_findings(text: str, path, prov, title: str = "What this run shows"):
    """The findings as ``path.md`` (title, sentences, provenance line) beside the run's figures, so a
    reader of reports/ sees them without opening the executed notebook."""
    return write_markdown(f"# {title}\n\n{text}\n\n_{prov.line()}_\n", path, prov)
