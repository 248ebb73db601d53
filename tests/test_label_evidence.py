"""Label evidence (evaluation/label_evidence.py): the label's and the latent's movement of the image by
hand, and the ruler's AUROC on generated images by hand and against the rank identity."""

import numpy as np
import pytest
import torch

from cxrnb.evaluation.label_evidence import movement, own_label_auroc
from cxrnb.evaluation.usefulness import aurocs
from cxrnb.labels import FINDINGS, LABELS, NO_FINDING


def test_movement_by_hand():
    base = torch.tensor([0.0, 0.2, 0.4]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    rows = {NO_FINDING: base, "Mass": base + 0.1, "Edema": base + 0.3}
    m = movement(rows)
    assert m.per_label == pytest.approx({"Mass": 0.1, "Edema": 0.3})
    # each sample against the next latent's (rolled by one): |0 - 0.4|, |0.2 - 0|, |0.4 - 0.2| -> mean 0.8 / 3
    assert m.latent == pytest.approx(0.8 / 3)
    assert m.label == pytest.approx(0.2) and m.ratio == pytest.approx(0.2 / (0.8 / 3))
    assert (m.most, m.least) == ("Edema", "Mass")


class Fixed:
    """A stand-in classifier whose probabilities are given (``predict_proba`` is all AUROC needs)."""

    def __init__(self, p):
        self.p = p

    def predict_proba(self, x, batch_size: int = 256):
        return self.p


def test_own_label_auroc_is_the_rank_identity_per_finding_and_their_mean():
    """Against an implementation of its own (usefulness.aurocs, the Mann-Whitney rank identity,
    itself checked against scikit-learn there), on the probabilities the classifier gives."""
    g = torch.Generator().manual_seed(0)
    n = 60
    y = (torch.rand(n, len(LABELS), generator=g) < 0.3).float()
    y[:, FINDINGS.index("Hernia")] = 0                          # one class only: no AUROC
    p = torch.rand(n, len(FINDINGS), generator=g)
    auc = own_label_auroc(Fixed(p), torch.zeros(n, 1, 8, 8), y)
    ranks = aurocs(p.numpy(), y[:, :len(FINDINGS)].numpy())
    for finding in FINDINGS:
        if finding == "Hernia":
            assert np.isnan(auc[finding]) and np.isnan(ranks[finding])
        else:
            assert auc[finding] == pytest.approx(ranks[finding])
    assert auc["macro"] == pytest.approx(ranks["macro"])


def test_own_label_auroc_by_hand():
    """Four images, one finding: positives scored 0.9 and 0.4, negatives 0.6 and 0.1: of the four
    (positive, negative) pairs three are ordered right, AUROC 0.75."""
    y = torch.zeros(4, len(LABELS))
    y[[0, 1], 0] = 1
    p = torch.full((4, len(FINDINGS)), 0.5)
    p[:, 0] = torch.tensor([0.9, 0.4, 0.6, 0.1])
    auc = own_label_auroc(Fixed(p), torch.zeros(4, 1, 8, 8), y)
    assert auc[FINDINGS[0]] == pytest.approx(0.75) and np.isnan(auc[FINDINGS[1]])
    assert auc["macro"] == pytest.approx(0.75)
