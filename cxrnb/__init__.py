"""cxrnb: a reproducible study of generative models (VAE, GMVAE, LSGAN, DDPM, Dirichlet VAE) for
chest X-rays, run from numbered notebooks.

The folders follow the study, bottom to top; a module imports only from its own folder or the
ones below it:

- ground: ``errors``, ``paths``, ``labels``, ``provenance``, ``runtime`` (device and processes),
  ``profiles`` (the notebooks' parameter sets)
- ``data/``: the CXR14 index, transforms, the image cache, the synthetic phantom, download, EDA
- ``models/``: the generators behind one contract (``models/base.py``) and their presets
- ``training/``: the training loop, checkpoints, several processes
- ``evaluation/``: diagnostics, metrics, features, the label classifier
- ``report/``: figures, tables, result sentences, ``reports/index.md``
- ``study/``: the notebooks' calls (train or reload a run, explore it, score it)
- top: ``cli`` (the ``cxrnb`` command), ``reproduce`` (every notebook headless) with ``kernel_signals``
  (SIGTERM and friends passed to its kernel), ``bench/``
"""

__version__ = "0.1.0"
