"""Label vocabularies shared by readers, tasks and metrics (plain tuples: importing this is free)."""

from __future__ import annotations

# The 14 CheXpert observations in the column order of CheXpert's train.csv / valid.csv and of
# MIMIC-CXR-JPG's -chexpert.csv / -negbio.csv. (The CheXbert labeler's heads use another order,
# with No Finding last: bench.metrics.clinical.OBSERVATIONS.)
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# The five CheXpert competition findings (CheXpert-5x200, MIMIC-5x200, LLaVA-Rad's CheXbert F1-5).
CHEXPERT_COMPETITION: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
