"""The CXR14 label vocabulary, in one place so that data, models and metrics agree on its order."""

# The 14 findings in the order of Wang et al. (2017), Table 1 of the ChestX-ray8 paper.
FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
# Columns of the multi-hot label matrix: the 14 findings, then "No Finding" (15 values in all).
LABELS: tuple[str, ...] = FINDINGS + (NO_FINDING,)
VIEWS: tuple[str, ...] = ("PA", "AP")
