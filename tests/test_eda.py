"""The label EDA against an independent count of the raw 'Finding Labels' strings."""

import numpy as np
import pandas as pd
import pytest

from cxrnb.data import eda
from cxrnb.data.index import read_labels
from cxrnb.labels import FINDINGS, LABELS


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return read_labels()  # the full 112,120-row table shipped with torchxrayvision


def test_label_counts_equal_a_plain_string_count(table):
    raw = table["labels"].str.split("|").explode().value_counts()
    counts = eda.label_counts(table)
    assert set(counts.index) == set(LABELS)
    for name in LABELS:
        assert counts[name] == raw[name], name


def test_paper_table1_comparison(table):
    cmp = eda.compare_with_paper(table).set_index("condition")
    assert len(cmp) == 20
    # The 14 findings the paper shares with the official table are identical ...
    assert (cmp.note == "identical").sum() == 14
    # ... five of its conditions are not CXR14 labels, and 'No Finding' differs.
    assert (cmp.note == "not a CXR14 label").sum() == 5
    assert cmp.loc["No Finding", "official"] == (table["labels"] == "No Finding").sum()
    assert cmp.loc["No Finding", "paper"] - cmp.loc["No Finding", "official"] == 59406 - 60361
    text = eda.explain_difference(eda.compare_with_paper(table))
    assert "NIH-CXR-LT" in text and "-955" in text


def test_cooccurrence_is_symmetric_with_counts_on_the_diagonal(table):
    co = eda.cooccurrence(table)
    assert co.shape == (14, 14)
    assert (co.values == co.values.T).all()
    assert list(np.diag(co)) == [int(table[f].sum()) for f in FINDINGS]
    # an off-diagonal cell against a direct count of both names in the raw strings
    both = (table["labels"].str.contains("Effusion") & table["labels"].str.contains("Infiltration")).sum()
    assert co.loc["Effusion", "Infiltration"] == both


def test_labels_per_image_and_patients(table):
    per = eda.labels_per_image(table)
    assert per.sum() == len(table) == 112_120
    assert per[0] == (table["labels"] == "No Finding").sum()
    p = eda.patients(table)
    assert p["patients"] == table["patient"].nunique() == 30_805


def test_subset_vs_full_shares(table):
    sub = table[table["patient"] < 100]
    mix = eda.subset_vs_full(sub, table)
    assert mix.loc["Hernia", "images here"] == sub["Hernia"].sum()
    assert mix.loc["Effusion", "share in full table"] == round(13317 / 112_120, 3)
