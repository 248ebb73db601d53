"""Label evidence (evaluation/label_evidence.py): the label's and the latent's movement of the image by
hand, and the ruler's AUROC on generated images against scikit-learn's on the same probabilities."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrnb.evaluation.label_evidence import movement, own_label_auroc
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


def test_own_label_auroc_is_sklearns_per_finding_and_their_mean():
    g = torch.Generator().manual_seed(0)
    n = 60
    y = (torch.rand(n, len(LABELS), generator=g) < 0.3).float()
    y[:, FINDINGS.index("Hernia")] = 0                          # one class only: no AUROC
    p = torch.rand(n, len(FINDINGS), generator=g)
    auc = own_label_auroc(Fixed(p), torch.zeros(n, 1, 8, 8), y)
    for j, finding in enumerate(FINDINGS):
        if finding == "Hernia":
            assert np.isnan(auc[finding])
        else:
            assert auc[finding] == pytest.approx(roc_auc_score(y[:, j].numpy(), p[:, j].numpy()))
    assert auc["macro"] == pytest.approx(np.nanmean([auc[f] for f in FINDINGS]))
