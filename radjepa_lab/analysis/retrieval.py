"""Report generation by retrieval, scored with ROUGE-L, BLEU-4 and a finding-level F1.

RadJEPA's third task writes reports with a 7B language model. The kit mirrors it without one:
the "generated" report for a test image is the report of its nearest training image in
embedding space. If the embedding groups images by finding, the retrieved report names the
right findings, which the finding-level F1 (via ``data.findings.parse_report``) measures
directly; ROUGE-L and BLEU-4 are the usual text-overlap scores.

ROUGE-L comes from Google's ``rouge-score`` and BLEU-4 from ``sacrebleu`` (13a tokenizer,
exponential smoothing), so the numbers compare with published report-generation results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from radjepa_lab.analysis.metrics import as_numpy
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "RetrievalResult",
    "bleu",
    "evaluate_retrieval",
    "finding_f1",
    "nearest_neighbours",
    "rouge_l",
]

def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of one candidate against its reference (Google's ``rouge-score``, no
    stemming), the number report-generation papers quote."""
    return float(_rouge().score(reference, candidate)["rougeL"].fmeasure)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def bleu(
    candidates: Sequence[str] | str,
    references: Sequence[str] | str,
    smooth: str = "exp",
) -> float:
    """Corpus BLEU-4 in [0, 1] with ``sacrebleu`` (13a tokenizer, one reference per candidate;
    pass strings for one pair). ``smooth="exp"`` is sacrebleu's default smoothing; ``"none"``
    is the textbook formula, which is 0 as soon as one n-gram order has no match."""
    import sacrebleu

    if isinstance(candidates, str):
        candidates, references = [candidates], [references]  # type: ignore[list-item]
    if len(candidates) != len(references):
        raise RadJEPALabError(
            f"bleu: {len(candidates)} candidates but {len(references)} references; pass one each"
        )
    if smooth not in ("exp", "none"):
        raise RadJEPALabError(f"bleu: smooth must be 'exp' or 'none', got {smooth!r}")
    res = sacrebleu.corpus_bleu(list(candidates), [list(references)], smooth_method=smooth)
    return float(res.score) / 100.0


def finding_f1(
    pred: np.ndarray, true: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """Per-finding F1, micro F1 and macro F1 for binary label matrices ``[N, F]``.

    A finding absent from both prediction and truth has no F1 and is left out of the macro mean
    (its entry is NaN) rather than counted as perfect.
    """
    p = np.asarray(pred) > 0.5
    t = np.asarray(true) > 0.5
    if p.shape != t.shape or p.shape[1] != len(names):
        raise RadJEPALabError(f"finding_f1: shapes {p.shape} and {t.shape} for {len(names)} names")
    tp = (p & t).sum(0).astype(float)
    fp = (p & ~t).sum(0).astype(float)
    fn = (~p & t).sum(0).astype(float)
    den = 2 * tp + fp + fn
    per = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    out = {n: float(per[i]) for i, n in enumerate(names)}
    out["micro"] = float(2 * tp.sum() / max(den.sum(), 1))
    out["macro"] = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
    return out


def nearest_neighbours(
    query: np.ndarray, bank: np.ndarray, k: int = 1, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``[Q, k]`` and cosine similarities of the ``k`` nearest bank rows per query."""
    q = as_numpy(query).astype(np.float64)
    b = as_numpy(bank).astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = q @ b.T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sim, idx, axis=1)


@dataclass
class RetrievalResult:
    """Retrieved reports for each test image and their scores against the true reports."""

    indices: np.ndarray  # [Q] index into the training bank
    similarity: np.ndarray  # [Q] cosine similarity of the match
    retrieved: list[str]
    references: list[str]
    rouge_l: float  # mean over test images
    bleu4: float  # corpus BLEU-4
    finding_f1: dict[str, float] = field(default_factory=dict)

    def rows(self, n: int = 5) -> list[dict[str, object]]:
        """First ``n`` (reference, retrieved, similarity) rows, for tables."""
        return [
            {
                "i": i,
                "reference": self.references[i],
                "retrieved": self.retrieved[i],
                "similarity": float(self.similarity[i]),
                "rouge_l": rouge_l(self.retrieved[i], self.references[i]),
            }
            for i in range(min(n, len(self.retrieved)))
        ]


def evaluate_retrieval(
    query_features: np.ndarray,
    query_reports: Sequence[str],
    bank_features: np.ndarray,
    bank_reports: Sequence[str],
    findings: Sequence[str] | None = None,
) -> RetrievalResult:
    """Retrieve the nearest training report for each query and score it.

    Finding-level F1 parses both reports with ``radjepa_lab.data.findings.parse_report``; pass
    ``findings=None`` to use the kit's ``FINDINGS``.
    """
    from radjepa_lab.data.findings import FINDINGS, parse_report

    if len(query_features) != len(query_reports) or len(bank_features) != len(bank_reports):
        raise RadJEPALabError(
            "evaluate_retrieval: each feature row needs exactly one report "
            f"(query {len(query_features)} vs {len(query_reports)}, "
            f"bank {len(bank_features)} vs {len(bank_reports)})"
        )
    names = list(FINDINGS if findings is None else findings)
    idx, sim = nearest_neighbours(query_features, bank_features, k=1)
    idx, sim = idx[:, 0], sim[:, 0]
    retrieved = [bank_reports[i] for i in idx]
    refs = list(query_reports)
    rl = float(np.mean([rouge_l(c, r) for c, r in zip(retrieved, refs, strict=True)]))
    b4 = bleu(retrieved, refs)

    def lab(texts: list[str]) -> np.ndarray:
        parsed = [parse_report(t) for t in texts]
        return np.array([[d.get(n, 0) for n in names] for d in parsed], dtype=float)

    f1 = finding_f1(lab(retrieved), lab(refs), names)
    return RetrievalResult(idx, sim, retrieved, refs, rl, b4, f1)
