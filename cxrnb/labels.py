"""The CXR14 label vocabulary, in one place so that data, models and metrics agree on its order."""

import torch

from cxrnb.errors import CxrnbError

# The 14 findings in the order of Wang et al. (2017), Table 1 of the ChestX-ray8 paper.
FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
# Columns of the multi-hot label matrix: the 14 findings, then "No Finding" (15 values in all).
LABELS: tuple[str, ...] = FINDINGS + (NO_FINDING,)
VIEWS: tuple[str, ...] = ("PA", "AP")


def one_hot(name: str) -> torch.Tensor:
    """The label row (15 values, ``LABELS`` order) of one label, for asking a conditional model for it."""
    if name not in LABELS:
        raise CxrnbError(f"unknown label {name!r}; valid: {', '.join(LABELS)}")
    return torch.eye(len(LABELS))[LABELS.index(name)]
