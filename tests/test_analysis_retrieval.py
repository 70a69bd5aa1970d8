"""ROUGE-L, BLEU-4 and finding-F1 against hand-computed values and the reference packages;
nearest-report retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radjepa_lab.analysis.retrieval import (
    bleu,
    evaluate_retrieval,
    finding_f1,
    nearest_neighbours,
    rouge_l,
)


def test_rouge_l_tokenizes_like_rouge_score() -> None:
    # rouge-score's default tokenizer: lower case, alphanumeric runs, punctuation dropped
    assert rouge_l("Heart size: ENLARGED. No effusion!", "heart size enlarged no effusion") == 1.0


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5
    # P = 5/6, R = 5/6 -> F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS = "a c" = 2, P = 2/3, R = 2/4 -> F = 2PR/(P+R) = 4/7
    assert rouge_l("a b c", "a c d e") == pytest.approx(4 / 7)
    assert rouge_l("x y", "z") == 0.0
    assert rouge_l("", "a") == 0.0


def test_bleu4_hand_computed() -> None:
    cand, ref = "the cat sat on the mat", "the cat is on the mat"
    # 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3; equal length -> BP = 1
    assert bleu(cand, ref, smooth="none") == 0.0
    # exp smoothing: zero 4-gram precision becomes 1/(2*3)
    expected = math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(1 / 4) + math.log(1 / 6)) / 4)
    assert bleu(cand, ref) == pytest.approx(expected)
    assert bleu("a b c d e", "a b c d e") == pytest.approx(1.0)
    # brevity penalty: candidate of 4 tokens vs reference of 8 -> exp(1 - 8/4) = e^-1
    assert bleu("a b c d", "a b c d e f g h") == pytest.approx(math.exp(-1))


def test_scores_equal_the_reference_implementations() -> None:
    """The numbers must be the ones published report-generation results quote: sacrebleu's
    corpus BLEU (13a tokenizer, exp smoothing) and rouge-score's ROUGE-L F1, no stemming."""
    sacrebleu = pytest.importorskip("sacrebleu")
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    c = ["Heart size is enlarged. No effusion.", "Lungs are clear, no pneumothorax."]
    r = ["Heart size is normal. Small left effusion.", "Lungs are clear; no effusion."]
    ref = sacrebleu.corpus_bleu(c, [r]).score / 100
    assert 0 < ref < 1 and bleu(c, r) == pytest.approx(ref, abs=1e-12)
    none = sacrebleu.corpus_bleu(c, [r], smooth_method="none").score / 100
    assert bleu(c, r, smooth="none") == pytest.approx(none, abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for cand, refr in zip(c, r, strict=True):
        want = scorer.score(refr, cand)["rougeL"].fmeasure
        assert 0 < want < 1 and rouge_l(cand, refr) == pytest.approx(want, abs=1e-12)
    # precision is over the candidate, recall over the reference: the order matters
    assert rouge_l("a b", "a b c d") == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_finding_f1_hand_computed() -> None:
    pred = np.array([[1, 0], [1, 1], [0, 0]])
    true = np.array([[1, 0], [0, 1], [0, 0]])
    f = finding_f1(pred, true, ["a", "b"])
    assert f["a"] == pytest.approx(2 / 3)  # tp 1, fp 1, fn 0
    assert f["b"] == 1.0
    assert f["micro"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert f["macro"] == pytest.approx((2 / 3 + 1) / 2)


def test_nearest_neighbours_cosine() -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    idx, sim = nearest_neighbours(np.array([[2.0, 0.1], [0.0, 5.0]]), bank, k=2)
    assert idx[:, 0].tolist() == [0, 1]
    assert sim[1, 0] == pytest.approx(1.0)


def test_evaluate_retrieval_with_phantom_reports() -> None:
    phantom = pytest.importorskip("radjepa_lab.data.phantom")
    b = phantom.generate_batch(12, seed=3)
    feats = b.labels + 0.01 * np.random.default_rng(0).normal(size=b.labels.shape)
    # queries identical to the bank -> each retrieves itself -> perfect scores
    r = evaluate_retrieval(feats, b.reports, feats, b.reports)
    assert r.rouge_l == pytest.approx(1.0)
    assert r.bleu4 == pytest.approx(1.0)
    assert r.finding_f1["micro"] == pytest.approx(1.0)
    assert np.array_equal(r.indices, np.arange(12))
