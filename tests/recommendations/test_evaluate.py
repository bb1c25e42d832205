"""The evaluation harness and the numeric building blocks, on hand-computed data."""

import numpy as np
import pytest

from recommendations.training.data import Interactions, Split, dedupe_last, holdout_split, validation_split
from recommendations.training.evaluate import (
    coverage_of,
    gini_of,
    ild_of,
    itemknn_neighbours,
    metrics_of,
    rank_from_neighbours,
    rank_popular,
)
from recommendations.training.rerank import debias_rerank, debias_tune
from recommendations.training.trending import age_scores, decayed_scores, trending_rows

DAY = 86_400.0


def _inter(rows: list[tuple[int, int, float]], weights: list[float] | None = None) -> Interactions:
    users, items, ts = zip(*rows, strict=True)
    w = weights or [1.0] * len(rows)
    return Interactions(
        np.array(users, np.int64), np.array(items, np.int32), np.array(ts, np.float64), np.array(w, np.float32)
    )


def test_dedupe_keeps_last_occurrence_in_time_order_with_the_largest_weight():
    inter = _inter([(0, 5, 3.0), (0, 3, 2.0), (0, 5, 1.0), (1, 3, 1.0)], weights=[1.0, 3.0, 5.0, 1.0])
    out = dedupe_last(inter, n_items=6)
    assert out.users.tolist() == [0, 0, 1]
    assert out.items.tolist() == [3, 5, 3]
    assert out.ts.tolist() == [2.0, 3.0, 1.0]
    assert out.weights.tolist() == [3.0, 5.0, 1.0]


# u0: 0,1,2  u1: 0,1,2  u2: 1,2,3  u3: 0,3 (too short to evaluate, still trains)
STORE = [(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 0, 1), (1, 1, 2), (1, 2, 3), (2, 1, 1), (2, 2, 2), (2, 3, 3), (3, 0, 1),
         (3, 3, 2)]  # fmt: skip


def test_holdout_split_withholds_the_last_item_of_users_with_three_items():
    split = holdout_split(dedupe_last(_inter(STORE), n_items=4))
    assert split.eval_users.tolist() == [0, 1, 2]
    assert split.heldout.tolist() == [2, 2, 3]
    assert len(split.train) == len(STORE) - 3


def test_itemknn_and_popularity_baselines_score_as_computed_by_hand():
    split = holdout_split(dedupe_last(_inter(STORE), n_items=4))
    idx, sim = itemknn_neighbours(split.train, 4)
    # Train: u0{0,1} u1{0,1} u2{1,2} u3{0,3}; |U0|=3 |U1|=3 |U2|=1 |U3|=1.
    assert idx[0].tolist()[:2] == [1, 3] and sim[0][:2] == pytest.approx([2 / 3, 1 / np.sqrt(3)])
    assert idx[2].tolist()[:1] == [1] and sim[2][0] == pytest.approx(1 / np.sqrt(3))
    top = rank_from_neighbours(nbr_idx=idx, nbr_score=sim, train=split.train, users=split.eval_users, n_items=4)
    # u0, u1: 2 and 3 tie at 1/sqrt(3), the lower index first; u2 owns 1, 2: only 0 is left.
    assert top[:, :2].tolist() == [[2, 3], [2, 3], [0, -1]]
    m = metrics_of(top, split.heldout)
    assert (m.hr, m.ndcg) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    pop = np.bincount(split.train.items, minlength=4).astype(float)
    top_pop = rank_popular(popularity=pop, train=split.train, users=split.eval_users)
    assert top_pop[:, :2].tolist() == [[2, 3], [2, 3], [0, 3]]
    m = metrics_of(top_pop, split.heldout)
    assert m.hr == 1.0 and m.ndcg == pytest.approx((2 + 1 / np.log2(3)) / 3)


def test_recent_items_are_weighted_by_recency_when_combined():
    # One user who had item 0 then item 1: 0's list says 2, 1's list says 3.
    train = _inter([(0, 0, 1), (0, 1, 2)])
    idx = np.array([[2], [3], [-1], [-1]], np.int32)
    score = np.array([[1.0], [0.9], [0], [0]], np.float32)
    users = np.array([0])
    flat = rank_from_neighbours(nbr_idx=idx, nbr_score=score, train=train, users=users, n_items=4, decay=1.0)
    decayed = rank_from_neighbours(nbr_idx=idx, nbr_score=score, train=train, users=users, n_items=4, decay=0.8)
    assert flat[0, :2].tolist() == [2, 3]
    assert decayed[0, :2].tolist() == [3, 2]  # 0.9 (newest) beats 0.8 * 1.0


def test_trending_halves_every_half_life_and_ranks_per_category():
    now = 100 * DAY
    scores = decayed_scores(
        items=np.array([0, 1, 1]), ts=np.array([now, now - 7 * DAY, now - 14 * DAY]),
        weights=np.array([1.0, 2.0, 4.0]), n_items=3, now=now, half_life_days=7,
    )  # fmt: skip
    assert scores.tolist() == pytest.approx([1.0, 2.0, 0.0])
    assert age_scores(scores, elapsed_seconds=7 * DAY, half_life_days=7).tolist() == pytest.approx([0.5, 1.0, 0.0])
    rows = trending_rows(
        scores=np.array([1.0, 2.0, 3.0]), product_ids=["a", "b", "c"], categories=[["X"], ["X", "Y"], ["Y"]],
        allowed=np.array([True, True, False]),
    )  # fmt: skip
    assert rows == [("", "b", 1, 2.0), ("", "a", 2, 1.0), ("X", "b", 1, 2.0), ("Y", "b", 1, 2.0), ("X", "a", 2, 1.0)]


def test_related_top_k_matches_a_full_ranking_and_skips_itself_and_disallowed_products():
    from recommendations.training.neighbours import related_top_k

    rng = np.random.default_rng(0)
    n = 20_000  # above twice the normaliser sample: the estimated normaliser is used
    ctx, tgt = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    allowed = rng.random(n) > 0.2
    idx, prob = related_top_k(ctx=ctx, tgt=tgt, bias=bias, rows=np.arange(4), allowed=allowed)
    scores = ctx[:4] @ tgt.T + bias
    scores[:, ~allowed] = -np.inf
    scores[np.arange(4), np.arange(4)] = -np.inf
    expected = np.argsort(-scores, axis=1)[:, :20]
    assert idx.tolist() == expected.tolist()
    top = scores.max(axis=1, keepdims=True)
    exact = np.exp(np.take_along_axis(scores, expected, 1) - top) / np.exp(scores - top).sum(axis=1, keepdims=True)
    assert np.abs(prob / exact - 1).max() < 0.05  # the sampled normaliser is within 5%


def test_validation_split_holds_out_the_last_but_one_item_and_keeps_the_test_items_out():
    split = holdout_split(dedupe_last(_inter(STORE), n_items=4))
    validation = validation_split(split)
    # Test: u0, u1 bought 2 last, u2 bought 3 last; their items before that: 1, 1, 2.
    assert validation.eval_users.tolist() == [0, 1, 2]
    assert validation.heldout.tolist() == [1, 1, 2]
    assert list(zip(validation.train.users.tolist(), validation.train.items.tolist(), strict=True)) == [
        (0, 0), (1, 0), (2, 1), (3, 0), (3, 3),
    ]  # fmt: skip


def test_coverage_gini_and_intra_list_diversity_of_hand_made_lists():
    top = np.array([[0, 1, 2], [0, 1, -1], [0, 3, -1]])
    allowed = np.array([True, True, True, False, True])  # product 3 is inactive, 4 never recommended
    # Active products shown: 0, 1, 2 of 0, 1, 2, 4.
    assert coverage_of(top, 5, allowed=allowed) == 0.75
    assert coverage_of(top, 5) == 0.8
    # Times shown among the active: 0: 3, 1: 2, 2: 1, 4: 0 -> sorted 0, 1, 2, 3 over n = 4, total 6:
    # (-3 * 0 - 1 * 1 + 1 * 2 + 3 * 3) / (4 * 6) = 10 / 24.
    assert gini_of(top, 5, allowed=allowed) == pytest.approx(10 / 24)
    assert gini_of(np.array([[0, 1], [1, 0]]), 2) == 0.0  # every product equally often
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # [0, 1, 2]: 1 - cos = 1, 2, 1 -> 4/3; [0, 1]: 1; [0, 3]: 1 - 1/sqrt(2).
    assert ild_of(top, vectors) == pytest.approx((4 / 3 + 1 + 1 - 1 / np.sqrt(2)) / 3)
    assert ild_of(top, vectors, chunk=1) == pytest.approx(ild_of(top, vectors))
    assert ild_of(np.array([[0, -1]]), vectors) == 0.0  # a list of one product has no pairs


# Product 1's candidates: 0 (popular, 10 users), then 2 and 3 (1 user each).
CAND_IDX = np.array([[-1, -1, -1], [0, 2, 3], [-1, -1, -1], [-1, -1, -1]], np.int32)
CAND_P = np.array([[0, 0, 0], [0.5, 0.3, 0.2], [0, 0, 0], [0, 0, 0]], np.float32)
POPULARITY = np.array([10.0, 1.0, 1.0, 1.0])


def test_debiasing_reorders_by_probability_over_popularity_and_keeps_the_mass():
    same_idx, same_p = debias_rerank(idx=CAND_IDX, probs=CAND_P, popularity=POPULARITY, beta=0.0, k=2)
    assert same_idx[1].tolist() == [0, 2] and same_p[1] == pytest.approx([0.5, 0.3])
    assert same_idx[0].tolist() == [-1, -1] and same_p[0].tolist() == [0.0, 0.0]
    idx, p = debias_rerank(idx=CAND_IDX, probs=CAND_P, popularity=POPULARITY, beta=1.0, k=3)
    # p / (1 + n): 0.5 / 11, 0.3 / 2, 0.2 / 2, shared out of the row's mass 1.0.
    w = np.array([0.3 / 2, 0.2 / 2, 0.5 / 11])
    assert idx[1].tolist() == [2, 3, 0] and p[1] == pytest.approx(w / w.sum())


def test_beta_is_chosen_on_the_validation_split_whatever_the_test_items_are():
    # u0 had 1, then 2, then 0 (the test item). Validation: history [1], held out 2.
    test = holdout_split(_inter([(0, 1, 1.0), (0, 2, 2.0), (0, 0, 3.0)]))
    validation = validation_split(test)
    assert validation.heldout.tolist() == [2] and 0 not in validation.train.items.tolist()
    choice = debias_tune(validation=validation, idx=CAND_IDX, probs=CAND_P, popularity=POPULARITY, betas=[0.0, 1.0],
                         tolerance_se=1.0, k=1, recent=5, decay=0.8)  # fmt: skip
    # On the test item (0) beta 0 would win; on the validation item (2) beta 1 does, and is chosen.
    assert choice.beta == 1.0
    assert choice.table == [
        {"beta": 0.0, "hr10": 0.0, "ndcg10": 0.0, "coverage10": 0.25},
        {"beta": 1.0, "hr10": 1.0, "ndcg10": 1.0, "coverage10": 0.25},
    ]
    # The choice is a function of the validation split alone: another test item changes nothing.
    other = holdout_split(_inter([(0, 1, 1.0), (0, 2, 2.0), (0, 3, 3.0)]))
    again = debias_tune(validation=validation_split(other), idx=CAND_IDX, probs=CAND_P, popularity=POPULARITY,
                        betas=[0.0, 1.0], tolerance_se=1.0, k=1, recent=5, decay=0.8)  # fmt: skip
    assert again == choice


def test_a_beta_within_the_tolerance_of_the_best_is_chosen_for_its_coverage():
    # u0 and u2 had 1, u1 had 3. Both lists start with the popular 0, then a rare product (2 for 1, 4 for 3).
    # beta 0: everyone gets 0 (u0, u2 hit: HR 2/3, coverage 1/5); beta 1: 2 and 4 (u1 hits: HR 1/3, 2/5).
    validation = Split(train=_inter([(0, 1, 1.0), (1, 3, 1.0), (2, 1, 1.0)]), eval_users=np.array([0, 1, 2]),
                       heldout=np.array([0, 4, 0]))  # fmt: skip
    idx = np.array([[-1, -1], [0, 2], [-1, -1], [0, 4], [-1, -1]], np.int32)
    p = np.array([[0, 0], [0.6, 0.4], [0, 0], [0.6, 0.4], [0, 0]], np.float32)
    tune = {"validation": validation, "idx": idx, "probs": p, "popularity": np.array([3.0, 1, 1, 1, 1]),
            "betas": [0.0, 1.0], "k": 1, "recent": 5, "decay": 0.8}  # fmt: skip
    strict = debias_tune(**tune, tolerance_se=0.0)
    assert [(row["hr10"], row["coverage10"]) for row in strict.table] == [(0.6667, 0.2), (0.3333, 0.4)]
    assert strict.beta == 0.0
    # One standard error of 2/3 over 3 users is 0.27: 1/3 is outside it, within two (0.54).
    assert debias_tune(**tune, tolerance_se=1.0).beta == 0.0
    assert debias_tune(**tune, tolerance_se=2.0).beta == 1.0
