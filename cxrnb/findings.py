"""The sentences that close a notebook section, computed from that run's numbers.

A hand-written conclusion goes stale the moment a setting changes; these functions read the table a
notebook has just produced and say only what its numbers support, including when they support
nothing (a run too short to separate two explanations says so).
"""

from __future__ import annotations

import pandas as pd

FAITHFUL = ("paper", "upstream")      # the paper's text and the authors' code


def _row_sentence(r) -> str:
    state = "**collapsed**" if r.collapsed else "**not collapsed**"
    return (f"- **{r.preset}** ({r.loss} loss, β = {r.beta:g}, effective β ≈ {r.effective_beta:,.3g}): "
            f"{r.active_units} active units, KL {r.kl:.3g} nats per image, held-out MSE {r.test_mse:.4f} "
            f"against {r.mean_image_mse:.4f} for the mean training image; samples' MS-SSIM "
            f"{r.sample_ms_ssim:.3f} (real images {r.real_ms_ssim:.3f}): {state}.")


def collapse_findings(table: pd.DataFrame) -> str:
    """Which runs of ``study.summary`` collapsed, and what the contrast between losses shows.

    "Collapsed" is ``Diagnostics.collapsed``: no active unit, or no better than the mean image.
    """
    lines = [_row_sentence(r) for r in table.itertuples()]
    faithful, elbo = table[table.loss.isin(FAITHFUL)], table[table.loss == "elbo"]
    alive = elbo[~elbo.collapsed]
    if len(faithful) and faithful.collapsed.all() and len(alive):
        best = alive.sort_values("test_mse").iloc[0]
        lines += ["", f"Every run with the paper's or the authors' loss collapsed ({len(faithful)} of "
                  f"{len(faithful)}, effective β ≥ {faithful.effective_beta.min():,.0f}). With the ELBO, "
                  f"{len(alive)} of {len(elbo)} did not: **{best.preset}** keeps {best.active_units} active "
                  f"units and reconstructs held-out images with "
                  f"{best.mean_image_mse / best.test_mse:.1f}× less error than the mean image."]
        if faithful.iterations.max() < alive.iterations.min():
            lines.append(f"Caveat: the runs with the paper's or the authors' loss trained {faithful.iterations.max()} "
                         f"iterations or fewer, the ELBO runs {alive.iterations.min()} or more; for them "
                         "'collapsed' may also mean 'not trained yet' (the KL curves above show whether their "
                         "KL had already gone to zero).")
        same = table[table.parameters == best.parameters]
        twins = same[same.loss.isin(FAITHFUL) & (same.iterations >= best.iterations)]
        if len(twins):
            lines.append(f"{', '.join(twins.preset)} trained as long as {best.preset} ({best.iterations} "
                         f"iterations) with the same architecture ({best.parameters:,} parameters), prior and "
                         "data: only the weighting of the loss differs, so here the loss scaling, not the "
                         "Gaussian prior, is what makes the model ignore its latent.")
    elif len(faithful) and not faithful.collapsed.all():
        kept = faithful[~faithful.collapsed]
        lines += ["", f"Not every run with the paper's or the authors' loss collapsed: {', '.join(kept.preset)} "
                  f"kept active units and beat the mean image, so this run does not show that loss causes collapse."]
    elif len(elbo) and not len(alive):
        lines += ["", "The ELBO runs collapsed too (or do not yet beat the mean image): this run is too short "
                  "to tell the loss from the prior; train them longer (`epochs_for`)."]
    return "\n".join(lines)


def best_non_collapsed(table: pd.DataFrame) -> str | None:
    """The preset with the lowest held-out MSE among those that did not collapse (None if all did)."""
    alive = table[~table.collapsed]
    return None if alive.empty else str(alive.sort_values("test_mse").iloc[0].preset)
