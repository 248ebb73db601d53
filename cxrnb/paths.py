"""Where generated files go by default: inside the checkout, whatever the working directory.

JupyterLab runs a notebook in ``notebooks/``, papermill in the folder it was started from; anchoring
relative defaults here keeps every run's cache, phantom and checkpoints in one place.
"""

from __future__ import annotations

from pathlib import Path


def repo_dir() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def in_repo(path: str | Path) -> Path:
    """``path`` itself when absolute, else resolved against the checkout."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_dir() / path


CACHE_DIR = "data/cache"    # preprocessed image caches (cxrnb.cache)
PHANTOM_DIR = "data/phantom"
RUNS_DIR = "runs"           # checkpoints, loss histories and sample grids (cxrnb.train)
