"""Label statistics of the CXR14 table: the paper's Table 1 regenerated, and what it left out.

Every function takes the index DataFrame of ``cxrnb.data.index.read_labels`` / ``load_index`` (columns
image, labels, follow_up, patient, age, sex, view, and one 0/1 column per name in LABELS).
"""

from __future__ import annotations

import pandas as pd

from cxrnb.labels import FINDINGS, LABELS, NO_FINDING

# Table 1 of the paper, as printed ("Frequency of Different Conditions in CXR-14 dataset").
PAPER_TABLE1: dict[str, int] = {
    "No Finding": 59406, "Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559,
    "Nodule": 6331, "Mass": 5782, "Pneumothorax": 5302, "Consolidation": 4667,
    "Pleural Thickening": 3385, "Cardiomegaly": 2776, "Emphysema": 2516, "Edema": 2303,
    "Subcutaneous Emphysema": 1991, "Fibrosis": 1686, "Pneumonia": 1431, "Tortuous Aorta": 742,
    "Calcification of the Aorta": 455, "Pneumoperitoneum": 316, "Pneumomediastinum": 253,
    "Hernia": 227,
}


def _official_name(paper_name: str) -> str:
    """The paper writes 'Pleural Thickening'; the official table writes 'Pleural_Thickening'."""
    return paper_name.replace(" ", "_") if paper_name.replace(" ", "_") in LABELS else paper_name


def label_counts(df: pd.DataFrame) -> pd.Series:
    """Images carrying each of the 15 official label values (multi-label: rows sum to > N)."""
    return df[list(LABELS)].sum().astype(int).sort_values(ascending=False)


def compare_with_paper(df: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1 beside the counts computed from ``df``, one row per name in either list."""
    ours = label_counts(df)
    rows = []
    for paper_name, paper_count in PAPER_TABLE1.items():
        name = _official_name(paper_name)
        official = int(ours[name]) if name in ours.index else None
        if official is None:
            note = "not a CXR14 label"
        elif official == paper_count:
            note = "identical"
        else:
            note = f"differs by {paper_count - official:+,}"
        rows.append({"condition": paper_name, "paper": paper_count, "official": official, "note": note})
    for name in ours.index:  # official labels the paper did not list (none today, kept for honesty)
        if name not in {_official_name(p) for p in PAPER_TABLE1}:
            rows.append({"condition": name, "paper": None, "official": int(ours[name]),
                         "note": "missing from the paper"})
    out = pd.DataFrame(rows)
    out["official"] = out["official"].astype("Int64")
    out["paper"] = out["paper"].astype("Int64")
    return out


def explain_difference(cmp: pd.DataFrame) -> str:
    """A paragraph, computed from the comparison table, on where the paper's 20 conditions differ."""
    extra = cmp[cmp.note == "not a CXR14 label"]
    same = cmp[cmp.note == "identical"]
    diff = cmp[cmp.note.str.startswith("differs")]
    text = (f"The official table has {len(LABELS)} label values ({len(FINDINGS)} findings + "
            f"'{NO_FINDING}'); the paper lists {len(cmp[cmp.paper.notna()])} conditions. "
            f"{len(same)} of the paper's counts equal the official ones exactly. ")
    if len(extra):
        text += (f"{len(extra)} of its conditions ({', '.join(extra.condition)}; "
                 f"{int(extra.paper.sum()):,} labels in all) are not CXR14 labels: they are the five "
                 "labels that the NIH-CXR-LT long-tail benchmark (Holste et al., 2022) added to CXR14 "
                 "by mining the reports, which makes 20 classes. ")
    for _, r in diff.iterrows():
        text += (f"'{r.condition}' is {int(r.paper):,} in the paper and {int(r.official):,} in the "
                 f"official table ({r.note.split(' ', 2)[2]}), consistent with images relabelled from "
                 f"'{NO_FINDING}' to one of the added labels. ")
    return text.strip()


def cooccurrence(df: pd.DataFrame) -> pd.DataFrame:
    """Finding x finding counts of images that carry both (diagonal: the finding's own count)."""
    m = df[list(FINDINGS)].astype(int)
    return m.T @ m


def labels_per_image(df: pd.DataFrame) -> pd.Series:
    """How many images carry 0 ('No Finding'), 1, 2, ... findings."""
    return df[list(FINDINGS)].sum(axis=1).value_counts().sort_index().rename("images")


def patients(df: pd.DataFrame) -> pd.Series:
    """Patients, images per patient and follow-ups: why the split must be by patient."""
    per = df.groupby("patient").size()
    return pd.Series({
        "images": len(df), "patients": per.size,
        "images per patient (mean)": round(float(per.mean()), 2),
        "images per patient (max)": int(per.max()),
        "patients with one image": int((per == 1).sum()),
        "share of images from patients with 10+ images": round(float(per[per >= 10].sum() / len(df)), 3),
        "max follow-up #": int(df["follow_up"].max()),
    })


def subset_vs_full(index: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Label shares of the images at hand beside the full table's: how representative they are."""
    here, full = label_counts(index), label_counts(table)
    return pd.DataFrame({
        "images here": here,
        "share here": (here / len(index)).round(3),
        "share in full table": (full[here.index] / len(table)).round(3),
    }).rename_axis("label")


def prevalence_vs_full(subset: pd.DataFrame, full: pd.DataFrame) -> pd.DataFrame:
    """Per label, the share of images carrying it (%) in ``subset`` and in ``full`` (both
    ``read_labels`` frames) and their ratio: how far a subset is from CXR14's own mix."""
    a, b = subset[list(LABELS)].mean() * 100, full[list(LABELS)].mean() * 100
    return pd.DataFrame({"subset %": a.round(1), "full CXR14 %": b.round(1),
                         "ratio": (a / b).round(1)}).sort_values("ratio", ascending=False)
