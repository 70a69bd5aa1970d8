"""Finding names and report templates: parse_report is the exact inverse of make_report."""

from __future__ import annotations

import itertools

import pytest

from radjepa_lab.data.findings import FINDINGS, REPORT_PREFIX, make_report, parse_report

META = {"ctr": 0.56, "effusion_side": "left", "effusion_height_mm": 90.0,
        "nodule_side": "right", "nodule_diameter_mm": 14.0, "consolidation_side": "left",
        "consolidation_zone": "lower", "pneumothorax_side": "left", "devices": ["ett", "cvc"]}


@pytest.mark.parametrize("meta", [META, {}], ids=["with-meta", "no-meta"])
def test_parse_report_inverts_make_report_for_every_label_combination(meta) -> None:
    for values in itertools.product((0, 1), repeat=len(FINDINGS)):
        labels = dict(zip(FINDINGS, values, strict=True))
        report = make_report(labels, meta)
        assert report.startswith(REPORT_PREFIX)
        assert parse_report(report) == labels, report


def test_negations_and_other_text_never_read_as_findings() -> None:
    assert parse_report("No pleural effusion. No pneumothorax.") == dict.fromkeys(FINDINGS, 0)
    assert parse_report("") == dict.fromkeys(FINDINGS, 0)
    assert parse_report("Heart size is normal, cardiothoracic ratio 0.45.")["cardiomegaly"] == 0
    assert parse_report("Cardiomegaly, cardiothoracic ratio 0.58.")["cardiomegaly"] == 1
