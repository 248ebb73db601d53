"""Every notebook runs headless under papermill (smoke parameters) and leaves its figures behind:
on the real CXR14 images when CXR14_ROOT is set, else on the synthetic phantom."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrnb.reproduce import find_notebooks, reproduce
from cxrnb.study.scoring import figure_stem
from tests.conftest import REAL_ROOT

# every notebook end to end, one test each: longer than the suite's per-test limit on 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# The figures each notebook must produce (a notebook may write more).
EXPECTED = {
    "01_eda_label_counts": ["label_counts", "cooccurrence", "fig10_preprocessed_samples"],
    "02_vae_beta_sweep": ["fig5_loss", "fig6_samples_VAE-beta0.1", "fig6_samples_VAE-elbo-beta1",
                          "fig6_samples_DirVAE-elbo", "why_diagnostics", "why_reconstructions", "why_samples",
                          "why_kl_per_dim"],
    "03_gmvae_variants": ["samples_GMVAE-V8", "samples_FS-GMVAE-V3", "samples_FS-GMVAE-elbo", "losses",
                          "why_diagnostics", "why_reconstructions", "why_samples"],
    "04_lsgan": ["fig8_samples", "fig9_losses", "final_samples", "samples_per_label_LSGAN-cond",
                 "samples_per_label_ACGAN", "losses_conditional", "recipe_samples", "recipe_losses"],
    "05_latent_explorer": ["vae_traversal", "vae_interpolation", "gmvae_components", "gmvae_traversal",
                           "gan_traversal", "dirvae_simplex"],
    "06_diffusion": ["samples_over_training", "denoising_trajectory", "loss", "minsnr_samples_over_training",
                     "minsnr_loss"],
    "07_evaluation": ["samples_per_model", "calibration_ladder", "memorisation_closest_pairs",
                      "quality_vs_compute", "samples_per_label_LSGAN-cond",
                      "samples_per_label_" + figure_stem("GMVAE-elbo · GMM sampler · labelled post hoc")],
}


def _run_all(tmp_path, source: str, overrides: list[str]) -> None:
    reports = tmp_path / "reports"
    index = reproduce("smoke", overrides=[f"runs_dir={tmp_path / 'runs'}", *overrides],
                      reports=reports, progress=False)
    assert "| failed" not in index.read_text()
    assert [nb.stem for nb in find_notebooks("notebooks")] == list(EXPECTED)
    for notebook, names in EXPECTED.items():
        for name in names:
            png = reports / "figures" / notebook / f"{name}.png"
            with Image.open(png) as im:
                pixels = np.asarray(im.convert("L"))
            assert pixels.shape[0] > 100 and pixels.std() > 5, png      # a real picture, not blank
            assert json.loads(png.with_suffix(".json").read_text())["source"] in (source, "full CXR14")
    table4 = pd.read_csv(reports / "figures" / "03_gmvae_variants" / "table4_variants.csv", index_col="preset")
    assert table4.loc["GMVAE-V8", "epochs"] == 2 and table4.loc["GMVAE-V6", "epochs"] == 1   # epochs_for
    for notebook in ("02_vae_beta_sweep", "03_gmvae_variants"):     # findings computed from the run
        text = (reports / "figures" / notebook / "findings.md").read_text()
        assert "Collapsed:" in text and source in text
    findings = (reports / "figures" / "04_lsgan" / "findings.md").read_text()
    assert "LSGAN-cond's image" in findings and "ACGAN's image" in findings        # the label's movement, each
    summary = pd.read_csv(reports / "figures" / "02_vae_beta_sweep" / "vae_summary.csv", index_col="preset")
    assert {"active_units", "test_mse", "mean_image_mse", "collapsed"} <= set(summary.columns)
    results = (reports / "results.md").read_text()
    assert "Does the paper's ranking hold?" in results and source in results
    # the augmentation test: a conditional GAN and a post-hoc labelled GMVAE, label evidence first
    for generator in ("LSGAN-cond", "GMVAE-elbo · GMM sampler · labelled post hoc"):
        assert f"| {generator} |" in results and f"#### {generator}" in results
    assert "### Label evidence" in results and "### What each generator lacked" in results
    assert "The findings this data over-represents most:" in results          # numbers: test_usefulness
    assert "real training images (a copier's score) (reference)" in results
    assert "| GMVAE-elbo · GMM sampler · labelled post hoc | – (chosen, not conditioned) |" in results
    # the smoke profile scores every model over 2 training seeds: spreads pooled, no gap settled
    assert "× 2, 2 seeds |" in results and "not resolved: 2 training seeds (settling needs 3)" in results
    assert "## The rulers" in results and "SHA-256" in results
    assert "train / val / test images: 64 / " in results     # 07 on the 64 training images the runs saw
    # the latent diffusion sampler: its own score row, and its decoder's ceiling beside it
    assert "| GMVAE-elbo · latent diffusion |" in results
    assert "the ceiling of any sampler of its latent" in results and "DPM-Solver++ steps" in results
    # quality against compute: the smoke profile's 2 snapshots + the final checkpoint per curve model
    curves = pd.read_csv(reports / "figures" / "07_evaluation" / "quality_vs_compute.csv")
    assert curves.groupby("model").size().to_dict() == {"GMVAE-elbo": 3, "LSGAN": 3}
    assert "## Quality against training compute" in results and "first scores below" in results


def test_all_notebooks(tmp_path):
    """One end-to-end run, on the real images when CXR14_ROOT is set (as in CI), else on the phantom:
    each run takes minutes on 2 cores, and the phantom path is covered piece by piece elsewhere."""
    if REAL_ROOT and Path(REAL_ROOT).is_dir():
        _run_all(tmp_path, "real CXR14 subset", [f"data_root={REAL_ROOT}", "device=auto"])
    else:
        _run_all(tmp_path, "synthetic phantom", ["device=auto"])     # "auto" works at every entry point
