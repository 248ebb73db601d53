"""The study's experiments in a few calls: train or reload a run (runs.py), then read off what a
notebook shows (views.py). ``explore`` walks a model's latent space, ``widgets`` puts sliders on it,
``scoring`` is the evaluation of notebook 07."""

from cxrnb.study.runs import (
                              Run,
                              best_run,
                              describe,
                              diagnose,
                              epochs_per_preset,
                              explorable,
                              heldout_split,
                              load_run,
                              run_dir,
                              train_run,
                              trained_presets,
)
from cxrnb.study.views import (
                              curves,
                              heldout_curves,
                              provenance,
                              reconstructions,
                              sample_grids,
                              samples,
                              samples_per_label,
                              seconds_per_image,
                              summary,
                              timed_samples,
                              trajectory,
)

__all__ = ["Run", "best_run", "curves", "describe", "diagnose", "epochs_per_preset", "explorable",
           "heldout_curves", "heldout_split", "load_run", "provenance", "reconstructions", "run_dir",
           "sample_grids", "samples", "samples_per_label", "seconds_per_image", "summary", "timed_samples",
           "train_run", "trained_presets", "trajectory"]
