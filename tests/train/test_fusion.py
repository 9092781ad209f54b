"""Score fusion: both forms by hand, monotone in every task's score, ties in a stable order,
weights validated, the frontier and the choice."""
from __future__ import annotations

import numpy as np
import pytest

import mmoe_annotated as mm
from mmoe_annotated.train.fusion import choose, frontier, two_task_grid

TASKS = ["finish", "like"]


def test_both_forms_by_hand():
    p = np.array([[0.5, 0.1], [0.2, 0.4]])
    assert np.allclose(mm.Fusion.of("sum", finish=0.6, like=0.4).score(p, TASKS), [0.34, 0.28])
    assert np.allclose(mm.Fusion.of("product", finish=1.0, like=0.5).score(p, TASKS),
                       [0.5 * 0.1 ** 0.5, 0.2 * 0.4 ** 0.5])


@pytest.mark.parametrize("form", ["sum", "product"])
def test_monotone_in_each_task(form):
    rng = np.random.default_rng(0)
    fusion = mm.Fusion.of(form, finish=0.3, like=0.7)
    p = rng.random((500, 2))
    base = fusion.score(p, TASKS)
    for t in range(2):
        up = p.copy()
        up[:, t] = np.minimum(1.0, up[:, t] + rng.random(500) * 0.2)
        assert (fusion.score(up, TASKS) >= base - 1e-15).all()


def test_zero_probability_in_a_product_is_finite():
    s = mm.Fusion.of("product", finish=1, like=1).score(np.array([[0.0, 0.5], [0.1, 0.5]]), TASKS)
    assert np.isfinite(s).all() and s[0] < s[1]


def test_weights_are_validated():
    with pytest.raises(ValueError, match=">= 0"):
        mm.Fusion.of("sum", finish=1.0, like=-0.1)
    with pytest.raises(ValueError, match="not all 0"):
        mm.Fusion.of("sum", finish=0.0)
    with pytest.raises(ValueError, match="form"):
        mm.Fusion.of("max", finish=1.0)
    with pytest.raises(KeyError, match="watch"):
        mm.Fusion.of("sum", watch=1.0).score(np.zeros((2, 2)), TASKS)


def test_rank_orders_each_user_and_keeps_ties_in_row_order():
    preds = np.array([[0.2, 0.0], [0.9, 0.0], [0.5, 0.0], [0.5, 0.0], [0.7, 0.0]])
    users = ["b", "a", "a", "a", "b"]
    out = mm.rank(mm.Fusion.of("sum", finish=1.0), preds, TASKS, users, items=["x", "y", "z", "w", "v"])
    assert out[out.user == "a"]["item"].tolist() == ["y", "z", "w"]  # z and w tie: row order
    assert out[out.user == "b"]["item"].tolist() == ["v", "x"]
    assert out["rank"].tolist() == [1, 2, 3, 1, 2]
    # reversed input order reverses only the tie
    again = mm.rank(mm.Fusion.of("sum", finish=1.0), preds[::-1], TASKS, users[::-1], items=["v", "w", "z", "y", "x"])
    assert again[again.user == "a"]["item"].tolist() == ["y", "w", "z"]
    top = mm.rank(mm.Fusion.of("sum", finish=1.0), preds, TASKS, users, k=1)
    assert top["item"].tolist() == [1, 4]


def test_frontier_ends_are_the_single_task_rankings_and_choose_obeys_the_slack():
    rng = np.random.default_rng(1)
    m = 3000
    users = rng.integers(0, 100, m)
    labels = (rng.random((m, 2)) < [0.4, 0.1]).astype(float)
    preds = np.clip(0.3 * labels + 0.7 * rng.random((m, 2)), 0, 1)
    table = frontier(preds, labels, users, TASKS, two_task_grid("finish", "like", 11), "sum", k=5)
    assert len(table) == 11 and table["w_like"].iloc[0] == 0 and table["w_like"].iloc[-1] == 1
    assert table["ndcg_finish"].iloc[0] == pytest.approx(mm.ndcg_at_k(labels[:, 0], preds[:, 0], users, 5).value)
    assert table["ndcg_like"].iloc[-1] == pytest.approx(mm.ndcg_at_k(labels[:, 1], preds[:, 1], users, 5).value)
    chosen = choose(table, "like", {"finish": 0.01})
    assert chosen["ndcg_finish"] >= table["ndcg_finish"].max() - 0.01
    allowed = table[table["ndcg_finish"] >= table["ndcg_finish"].max() - 0.01]
    assert chosen["ndcg_like"] == allowed["ndcg_like"].max()


def test_fusion_round_trips_through_json():
    f = mm.Fusion.of("product", finish=0.25, like=0.75)
    assert mm.Fusion.from_dict(f.to_dict()) == f
