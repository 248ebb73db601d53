"""Where an artefact came from: every figure, table and checkpoint carries one of these."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cxrnb.paths import write_text
from cxrnb.runtime import library_versions

# The three data sources a number in this project can come from.
SOURCES = ("real CXR14 subset", "full CXR14", "synthetic phantom")
OTHER_IMAGES = "images from"        # a folder of other images: "images from <folder>"


def git_commit() -> str:
    """The short commit of the package's checkout (with '+dirty' when it has changes), or 'unknown'.

    Changes under reports/ do not count: a run rewrites the committed reports as it goes, and the
    figures it makes come from the code, not from the previous run's figures."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    try:
        rev, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "-uno", "--", ":(top)",
                                                           ":(exclude,top)reports")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


@dataclass
class Provenance:
    """Data source, image count and size, epochs and seed: what a reader needs to weigh a result."""

    source: str                 # one of SOURCES
    n_images: int               # images the result was computed from (e.g. training images)
    image_size: int             # 0 when no pixels were read (label-table statistics)
    epochs: float = 0.0
    seed: int = 0
    extra: dict = field(default_factory=dict)   # anything else worth stating (beta, preset, n samples)
    precision: str = ""         # how a trained model computed: "fp32", "bf16 autocast + channels_last"
    device: str = ""            # what it ran on: the CPU model or the GPU (runtime.device_name)
    versions: dict = field(default_factory=library_versions)   # torch, torchvision, diffusers, numpy
    commit: str = field(default_factory=git_commit)

    def __post_init__(self):
        if self.source not in SOURCES and not self.source.startswith(OTHER_IMAGES):
            raise ValueError(f"unknown data source {self.source!r}; expected one of {SOURCES} "
                             f"or '{OTHER_IMAGES} <folder>'")

    def line(self) -> str:
        """One human line for a figure footer."""
        size = f"{self.image_size}px" if self.image_size else "label table only"
        bits = [f"data: {self.source}", f"{self.n_images:,} images", size,
                f"epochs: {self.epochs:g}", f"seed {self.seed}"]
        bits += [f"{k}: {v}" for k, v in self.extra.items()]
        bits += [f"{self.precision} on {self.device}"] if self.precision else []
        bits += [" ".join(f"{k} {v}" for k, v in self.versions.items())]
        return " · ".join(bits) + f" · cxrnb {self.commit}"

    def updated(self, epochs: float | None = None, **extra) -> Provenance:
        """A copy for an artefact derived from this one: other epochs (e.g. a classifier trained on
        this data), more facts in ``extra``."""
        return replace(self, epochs=self.epochs if epochs is None else epochs, extra={**self.extra, **extra})

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        """Write the record beside an artefact (``fig.png`` -> ``fig.json``)."""
        return write_text(Path(path).with_suffix(".json"), json.dumps(self.to_dict(), indent=2) + "\n")
