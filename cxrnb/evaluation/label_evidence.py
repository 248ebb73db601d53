"""Do a conditional generator's images carry the labels they were generated for? Asked before any
usefulness test: a classifier cannot learn a finding from images that do not show it, so a generator
without label evidence can only add unlabelled images, and its usefulness result says nothing about
synthetic *labelled* X-rays.

Two measures, each of a different kind:

- **movement** (``movement``): from the same latents, how much switching the label from "No
  Finding" to a finding changes the image, against how much another latent changes it. A generator
  that ignores its labels moves the image far less with the label than with the latent.
- **the ruler's AUROC on the generated images** (``own_label_auroc``): the shipped ruler
  (``cxrnb.evaluation.ruler``, a classifier trained once on the real training images) reads the
  images, and its ROC AUC against the labels they were generated for says whether a network that
  took no part in making them sees those findings in them: 0.5 for images that do not carry them.
  Two references frame it: the ruler on the held-out real test images (images as real as real, but
  unseen) and on the real training images themselves (what a generator that copied its training
  images would score, since the ruler learnt from them: a high AUROC with a high memorised fraction
  is copying, not drawing).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from cxrnb.evaluation.classifier import Classifier, auroc_per_finding
from cxrnb.labels import NO_FINDING

MACRO = "macro"


@dataclass(frozen=True)
class Movement:
    """Mean absolute change of the image (fraction of the grey range) when the label switches from
    the reference to each finding, latents held fixed (``per_label``), and between two latents of the
    reference label (``latent``)."""

    per_label: dict[str, float]
    latent: float

    @property
    def label(self) -> float:
        """The label's change, averaged over the findings."""
        return sum(self.per_label.values()) / len(self.per_label)

    @property
    def ratio(self) -> float:
        """The label's change as a fraction of the latent's: near 0 when the label is ignored."""
        return self.label / self.latent if self.latent > 0 else float("nan")

    @property
    def most(self) -> str:
        return max(self.per_label, key=self.per_label.get)

    @property
    def least(self) -> str:
        return min(self.per_label, key=self.per_label.get)


def movement(rows: dict[str, Tensor], reference: str = NO_FINDING) -> Movement:
    """``rows`` from ``study.samples_per_label`` (label -> images from the same latents in every
    row): each finding's images against the reference's, pixel by pixel, and the reference's images
    against each other (each sample against the next latent's)."""
    base = rows[reference]
    per_label = {name: float((images - base).abs().mean()) for name, images in rows.items() if name != reference}
    latent = float((base - base.roll(1, 0)).abs().mean())
    return Movement(per_label, latent)


def own_label_auroc(ruler: Classifier, images, labels) -> pd.Series:
    """The ruler's ROC AUC per finding on ``images`` against the ``labels`` they were generated for,
    and their mean over the findings with both classes present, ``"macro"``."""
    auc = auroc_per_finding(ruler, images, labels)
    auc[MACRO] = auc.mean()
    return auc
