"""Ranking metrics against values computed by hand, and the provenance evaluate() records."""

import math

import numpy as np
import pytest

from transferkit.recsys import (
    EmbeddingTables,
    Interactions,
    auc,
    coverage_at_k,
    evaluate,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    precision_at_k_implicit,
    recall_at_k,
)

# one user: ranked a, b, c, d; relevant b, d and x (x never recommended)
RECS = [["a", "b", "c", "d"]]
REL = [{"b", "d", "x"}]


def test_textbook_values_by_hand():
    assert precision_at_k(RECS, REL, 4) == pytest.approx(2 / 4)
    assert recall_at_k(RECS, REL, 4) == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # hits at ranks 2 and 4
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # 3 relevant, all at the top
    assert ndcg_at_k(RECS, REL, 4) == pytest.approx(dcg / idcg)
    # AP@4 = (P@2 * 1 + P@4 * 1) / min(4, 3) = (1/2 + 2/4) / 3
    assert map_at_k(RECS, REL, 4) == pytest.approx(1 / 3)


def test_cutoff_and_implicit_variant_have_different_values():
    # @2: one hit (b). Textbook precision 1/2; implicit divides by min(2, 3) = 2 as well
    assert precision_at_k(RECS, REL, 2) == pytest.approx(0.5)
    assert precision_at_k_implicit(RECS, REL, 2) == pytest.approx(0.5)
    # @4 they differ: 2/4 vs 2/min(4, 3)
    assert precision_at_k_implicit(RECS, REL, 4) == pytest.approx(2 / 3)
    assert precision_at_k(RECS, REL, 4) == pytest.approx(1 / 2)


def test_users_without_relevant_items_are_skipped_and_padding_ignored():
    recs = [["a", None, None], ["b", "a", "c"]]
    rel = [set(), {"a"}]
    assert recall_at_k(recs, rel, 3) == pytest.approx(1.0)
    assert ndcg_at_k(recs, rel, 3) == pytest.approx(1 / math.log2(3))
    assert math.isnan(recall_at_k(recs, [set(), set()], 3))
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(recs, rel, 0)


def test_coverage_and_auc_by_hand():
    assert coverage_at_k([["a", "b"], ["a", "c"]], n_items=8, k=2) == pytest.approx(3 / 8)
    assert coverage_at_k([["a", "b"], ["a", "c"]], n_items=8, k=1) == pytest.approx(1 / 8)
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.2, 0.1, 0.0]])
    # user 0: positives {0, 3}: pairs (0>1, 0>2, 3>1, 3<2) -> 3/4
    # user 1: positive {0} tied with item 1 (1/2), above 2 and 3 -> 2.5/3; item 3 excluded -> 1.5/2
    assert auc(scores, [np.array([0, 3]), np.array([0])]) == pytest.approx((3 / 4 + 2.5 / 3) / 2)
    assert auc(scores[1:], [np.array([0])], [np.array([3])]) == pytest.approx(1.5 / 2)


def test_evaluate_records_provenance_and_filters_seen_items():
    # two users, identity factors: u0 prefers item a, then b; u1 prefers b
    tables = EmbeddingTables(
        np.array([[1.0, 0.5], [0.0, 1.0]], np.float32), np.eye(2, dtype=np.float32), ["u0", "u1"], ["a", "b"]
    )
    train = Interactions.from_arrays(["u0"], ["a"])
    test = Interactions.from_arrays(["u0", "u1", "u1"], ["b", "a", "b"], weights=[1.0, 0.5, 5.0])
    r = evaluate(tables, train, test, k=1, positive_threshold=1.0, split={"split": "random", "seed": 3})
    # with a filtered, u0's top-1 is b (relevant); u1 has only b (a weighs 0.5 < 1): top-1 b
    assert r["ndcg@1"] == 1.0 and r["recall@1"] == 1.0 and r["n_users"] == 2
    assert (r["split"], r["seed"], r["positive_threshold"], r["filter_seen"]) == ("random", 3, 1.0, True)
    unfiltered = evaluate(tables, train, test, k=1, positive_threshold=1.0, filter_seen=False, with_auc=True)
    assert unfiltered["recall@1"] == 0.5 and unfiltered["filter_seen"] is False  # u0 gets a again
    assert unfiltered["auc"] == pytest.approx((0.0 + 1.0) / 2)  # u0 ranks b below a; u1 ranks b on top
    with pytest.raises(ValueError, match="no test user has a relevant item"):
        evaluate(tables, train, test, positive_threshold=10.0)
