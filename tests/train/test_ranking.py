"""Per-user ranking metrics: hand-computed cases, and scikit-learn's roc_auc_score and ndcg_score
user by user on random data with ties."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

import mmoe_annotated as mm


def test_group_auc_by_hand():
    # user a: 3 rows, both classes, AUC 1 (the positive on top); user b: 4 rows, AUC 0.5 (1 of 2
    # pairs right... scores below); user c: one class, skipped.
    y = [1, 0, 0, 1, 0, 1, 0, 1, 1]
    s = [0.9, 0.1, 0.2, 0.5, 0.6, 0.7, 0.4, 0.3, 0.8]
    g = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    # b: positives 0.5, 0.7; negatives 0.6, 0.4 -> pairs right: (0.5>0.4), (0.7>0.6), (0.7>0.4) = 3 of 4
    result = mm.group_auc(y, s, g)
    assert result.users == 2 and result.rows == 7
    assert result.value == pytest.approx((3 * 1.0 + 4 * 0.75) / 7)


def test_group_auc_counts_a_tie_as_half():
    result = mm.group_auc([1, 0], [0.5, 0.5], [7, 7])
    assert result.value == 0.5 and result.users == 1


def test_group_auc_with_no_two_class_user_is_nan():
    result = mm.group_auc([1, 1, 0], [0.2, 0.3, 0.4], [1, 1, 2])
    assert np.isnan(result.value) and result.users == 0


def test_group_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        mm.group_auc([1, 0], [0.1], [1, 1])
    with pytest.raises(ValueError, match="0/1 labels"):
        mm.group_auc([2, 0], [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="finite"):
        mm.group_auc([1, 0], [np.nan, 0.2], [1, 1])


def _random(seed=0, m=4000, users=300):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, users, m)
    y = (rng.random(m) < 0.3).astype(float)
    s = np.round(rng.random(m) + 0.4 * y, 1)  # rounded: many ties
    rel = y + (rng.random(m) < 0.2)  # graded 0, 1, 2
    return pd.DataFrame({"g": g, "y": y, "s": s, "rel": rel})


def test_group_auc_matches_sklearn_user_by_user():
    df = _random()
    aucs, weights = zip(*[(roc_auc_score(d.y, d.s), len(d)) for _, d in df.groupby("g") if d.y.nunique() == 2])
    result = mm.group_auc(df.y, df.s, df.g)
    assert result.users == len(aucs)
    assert result.value == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ndcg_matches_sklearn_user_by_user(k):
    df = _random(1)
    ref = [ndcg_score([d.rel], [d.s], k=k) for _, d in df.groupby("g") if len(d) >= 2 and d.rel.max() > 0]
    result = mm.ndcg_at_k(df.rel, df.s, df.g, k)
    assert result.users == len(ref)
    assert result.value == pytest.approx(np.mean(ref), abs=1e-12)


def test_ndcg_by_hand():
    # one user, relevances in score order 0, 1, 1: DCG@2 = 1/log2(3); ideal = 1 + 1/log2(3)
    result = mm.ndcg_at_k([0, 1, 1], [0.9, 0.5, 0.1], ["u"] * 3, k=2)
    assert result.value == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # a user with a single row, or nothing relevant, is not averaged
    assert mm.ndcg_at_k([1, 0, 0], [0.3, 0.2, 0.1], ["a", "b", "b"], k=2).users == 0


def test_recall_by_hand_and_ties_at_the_cut():
    # user a: positives at positions 1 and 3 of 4: recall@2 = 1/2
    assert mm.recall_at_k([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], ["a"] * 4, k=2).value == 0.5
    # all four tied, two positives: the expected share in the top 2 of a random order is 1/2
    assert mm.recall_at_k([1, 0, 1, 0], [0.5] * 4, ["a"] * 4, k=2).value == pytest.approx(0.5)
    # one tie block straddling the cut: 0.9 (neg) then three tied rows with one positive, k=2
    assert mm.recall_at_k([0, 1, 0, 0], [0.9, 0.5, 0.5, 0.5], ["a"] * 4, k=2).value == pytest.approx(1 / 3)


def test_recall_against_a_loop():
    df = _random(2)
    ref = []
    for _, d in df.groupby("g"):
        if d.y.sum() == 0:
            continue
        d = d.sort_values("s", ascending=False, kind="stable")
        expected_hits = 0.0
        for s, block in d.groupby("s", sort=False):
            first = int(np.flatnonzero(d.s.to_numpy() == s)[0])
            inside = min(max(10 - first, 0), len(block)) / len(block)
            expected_hits += block.y.sum() * inside
        ref.append(expected_hits / d.y.sum())
    result = mm.recall_at_k(df.y, df.s, df.g, 10)
    assert result.users == len(ref) and result.value == pytest.approx(np.mean(ref), abs=1e-12)


def test_k_is_checked():
    with pytest.raises(ValueError, match="k must be"):
        mm.ndcg_at_k([1, 0], [0.1, 0.2], [1, 1], k=0)


def test_ranking_metrics_table():
    df = _random(3)
    labels = np.stack([df.y, (df.rel == 2).astype(float)], axis=1)
    preds = np.stack([df.s / 2, df.s / 3], axis=1)
    table = mm.ranking_metrics(labels, preds, df.g, ["finish", "like"], k=5)
    assert list(table.index) == ["finish", "like"]
    assert table.loc["finish", "auc"] == pytest.approx(roc_auc_score(df.y, df.s))
    assert table.loc["finish", "gauc"] == pytest.approx(mm.group_auc(df.y, df.s, df.g).value)
    assert table.loc["like", "ndcg@5"] == pytest.approx(mm.ndcg_at_k(labels[:, 1], df.s, df.g, 5).value)
    assert table.loc["finish", "gauc_users"] > 0


def test_global_and_group_auc_can_disagree():
    """A scorer that only knows which users finish more wins on global AUC and loses on group AUC."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(200), 20)
    rate = rng.uniform(0.05, 0.95, 200)[users]
    y = (rng.random(len(users)) < rate).astype(float)
    user_only = rate + 0.01 * rng.random(len(users))  # the user's rate, nothing about the item
    within = 0.15 * y + 0.6 * rng.random(len(users))  # some item signal, no user effect
    assert roc_auc_score(y, user_only) > roc_auc_score(y, within)
    assert mm.group_auc(y, user_only, users).value < mm.group_auc(y, within, users).value
