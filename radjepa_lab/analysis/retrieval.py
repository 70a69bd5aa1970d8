"""Report generation by retrieval, scored with ROUGE-L, BLEU-4 and a finding-level F1.

RadJEPA's third task writes reports with a 7B language model. The kit mirrors it without one:
the "generated" report for a test image is the report of its nearest training image in
embedding space. If the embedding groups images by finding, the retrieved report names the
right findings, which the finding-level F1 (via ``data.phantom.parse_report``) measures
directly; ROUGE-L and BLEU-4 are the usual text-overlap scores.

ROUGE-L and BLEU-4 are implemented here in ~60 lines instead of depending on ``rouge-score``
(which pulls nltk and absl) and ``sacrebleu``. Tokenisation follows rouge-score's default
(lower-case, alphanumeric runs); BLEU uses the same tokens, so punctuation does not count (a
difference from sacrebleu's 13a tokenizer). Hand-computed values are in the tests.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    "tokenize",
]

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric tokens (rouge-score's default tokenizer, without stemming)."""
    return _TOKEN.findall(text.lower())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1: harmonic mean of LCS precision (over candidate) and recall (over reference)."""
    c, r = tokenize(candidate), tokenize(reference)
    if not c or not r:
        return 0.0
    lcs = _lcs(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(
    candidates: Sequence[str] | str,
    references: Sequence[str] | str,
    max_n: int = 4,
    smooth: str = "exp",
) -> float:
    """Corpus BLEU-``max_n`` in [0, 1] (one reference per candidate; pass strings for one pair).

    Clipped n-gram counts are summed over the corpus, combined by a geometric mean and scaled by
    the brevity penalty ``exp(1 - r/c)`` when the candidates are shorter than the references.
    ``smooth="exp"`` (sacrebleu's default) replaces the k-th zero precision by ``1/(2^k * total)``
    so one missing 4-gram in a short report does not zero the score; ``"none"`` is the textbook
    formula.
    """
    if isinstance(candidates, str):
        candidates, references = [candidates], [references]  # type: ignore[list-item]
    if len(candidates) != len(references):
        raise RadJEPALabError(
            f"bleu: {len(candidates)} candidates but {len(references)} references; pass one each"
        )
    if smooth not in ("exp", "none"):
        raise RadJEPALabError(f"bleu: smooth must be 'exp' or 'none', got {smooth!r}")
    match = [0] * max_n
    total = [0] * max_n
    c_len = r_len = 0
    for cand, ref in zip(candidates, references, strict=True):
        c, r = tokenize(cand), tokenize(ref)
        c_len += len(c)
        r_len += len(r)
        for n in range(1, max_n + 1):
            cn, rn = _ngrams(c, n), _ngrams(r, n)
            match[n - 1] += sum(min(v, rn[g]) for g, v in cn.items())
            total[n - 1] += max(len(c) - n + 1, 0)
    if c_len == 0:
        return 0.0
    logs = []
    k = 1
    for m, t in zip(match, total, strict=True):
        if t == 0:
            return 0.0
        if m == 0:
            if smooth == "none":
                return 0.0
            k *= 2
            logs.append(math.log(1.0 / (k * t)))
        else:
            logs.append(math.log(m / t))
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
    return bp * math.exp(sum(logs) / max_n)


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

    Finding-level F1 parses both reports with ``radjepa_lab.data.phantom.parse_report``; pass
    ``findings=None`` to use the phantom's ``FINDINGS``.
    """
    from radjepa_lab.data.phantom import FINDINGS, parse_report

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
