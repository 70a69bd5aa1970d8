"""What a chest X-ray can show, and how a report says it: finding names and report templates.

The phantom generator draws these findings and writes these reports; retrieval scores
generated or retrieved reports by reading them back (:func:`parse_report`). Keeping the names
and the templates in one place lets any report-producing method be scored the same way.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FINDINGS", "REPORT_PREFIX", "STRUCTURES", "make_report", "parse_report"]

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "effusion",
    "nodule",
    "consolidation",
    "pneumothorax",
    "support_device",
)
STRUCTURES: tuple[str, ...] = ("right_lung", "left_lung", "heart", "ribs")
REPORT_PREFIX = "SYNTHETIC PHANTOM."

_NEGATIVE = {
    "cardiomegaly": "Heart size is normal",
    "effusion": "No pleural effusion.",
    "nodule": "No nodule or mass.",
    "consolidation": "No consolidation.",
    "pneumothorax": "No pneumothorax.",
    "support_device": "No support devices.",
}
_DEVICE_NAMES = {"ett": "endotracheal tube", "cvc": "central venous catheter",
                 "pacemaker": "pacemaker"}


def make_report(labels: dict[str, int], meta: dict[str, Any]) -> str:
    """Templated radiology report; :func:`parse_report` is its exact inverse on labels."""
    s = [REPORT_PREFIX, "PA chest radiograph."]
    ctr = meta.get("ctr", float("nan"))
    if labels["cardiomegaly"]:
        s.append(f"Cardiomegaly, cardiothoracic ratio {ctr:.2f}.")
    else:
        s.append(f"{_NEGATIVE['cardiomegaly']}, cardiothoracic ratio {ctr:.2f}.")
    if labels["effusion"]:
        h = meta.get("effusion_height_mm", 0.0)
        size = "Small" if h < 55 else ("Moderate" if h < 85 else "Large")
        s.append(f"{size} {meta.get('effusion_side', 'right')} pleural effusion "
                 "blunting the costophrenic angle.")
    else:
        s.append(_NEGATIVE["effusion"])
    if labels["nodule"]:
        s.append(f"A {meta.get('nodule_diameter_mm', 0):.0f} mm rounded nodule/mass "
                 f"in the {meta.get('nodule_side', 'right')} lung.")
    else:
        s.append(_NEGATIVE["nodule"])
    if labels["consolidation"]:
        s.append(f"Patchy consolidation with air bronchograms in the "
                 f"{meta.get('consolidation_side', 'right')} {meta.get('consolidation_zone', 'mid')}"
                 " zone.")
    else:
        s.append(_NEGATIVE["consolidation"])
    if labels["pneumothorax"]:
        s.append(f"{meta.get('pneumothorax_side', 'right').capitalize()} apicolateral pneumothorax "
                 "with a visible pleural line and absent lung markings.")
    else:
        s.append(_NEGATIVE["pneumothorax"])
    if labels["support_device"]:
        names = [_DEVICE_NAMES[k] for k in meta.get("devices", [])] or ["support device"]
        s.append("Support devices: " + ", ".join(names) + ".")
    else:
        s.append(_NEGATIVE["support_device"])
    return " ".join(s)


_POSITIVE = {
    "cardiomegaly": re.compile(r"\bcardiomegaly\b", re.I),
    "effusion": re.compile(r"(?<!no )\bpleural effusion\b", re.I),
    "nodule": re.compile(r"\bnodule/mass\b", re.I),
    "consolidation": re.compile(r"(?<!no )\bconsolidation with\b", re.I),
    "pneumothorax": re.compile(r"\bpneumothorax with\b", re.I),
    "support_device": re.compile(r"\bsupport devices:", re.I),
}


def parse_report(report: str) -> dict[str, int]:
    """Labels from a report written by :func:`make_report` (findings not mentioned -> 0).

    Used to score generated/retrieved reports (finding F1): a sentence counts as positive
    only in its positive template form, so negations never read as findings.
    """
    sentences = [t.strip() for t in re.split(r"(?<=\.)\s+", report) if t.strip()]
    out = dict.fromkeys(FINDINGS, 0)
    for sent in sentences:
        if sent.lower().startswith("no ") or sent.startswith(_NEGATIVE["cardiomegaly"]):
            continue
        for f, pat in _POSITIVE.items():
            if pat.search(sent):
                out[f] = 1
    return out
