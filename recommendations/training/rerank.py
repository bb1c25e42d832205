"""Popularity-debiased re-ranking of the related lists, tuned on the validation split.

The model's score of j for i is P(j | i), which carries j's popularity: the most
bought products top almost every list (coverage@10 of 7 % at the training benchmark's
scale). Re-ranking the candidates of each list by log P(j | i) - beta * log(1 + n_j),
with n_j the users who had j in training, moves rarer products up; beta = 0 is the
model's own order. beta is chosen by `debias_tune` on the validation split only (the
last-but-one item of each evaluated user), never on the test split, and the same
function of the pipeline runs in bench/recs_quality.py.

No TensorFlow here: this is numpy over the (products x candidates) arrays that
`neighbours.related_top_k` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recommendations.training.data import Split, recent_items
from recommendations.training.evaluate import coverage_of, metrics_of, rank_from_neighbours

# Candidates per product that the re-ranking may reorder: the top 20 of the debiased
# order are taken from the model's top 100. A product below the model's 100th would
# need its popularity far below the 20th's to climb in; a wider pool costs memory
# (products x candidates) in the related stage, and was not measured.
RERANK_CANDIDATES = 100


def debias_rerank(
    *,
    idx: np.ndarray,
    probs: np.ndarray,
    popularity: np.ndarray,
    beta: float,
    k: int,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top `k` of each row of (idx, probs) by log p - beta * log(1 + popularity).

    Scores stay probabilities that lists can add up when served: a row's candidate
    mass sum(p) is shared out again in proportion to p * (1 + n_j) ** -beta, so a
    re-ranked list sums to no more than the original candidates did. beta = 0 returns
    the first `k` candidates unchanged. With `rows`, only those rows are computed
    (the others are -1 / 0): tuning needs only the lists of the validation users'
    recent items. -1 in `idx` pads short lists and stays padding.
    """
    out_idx = np.full((len(idx), k), -1, dtype=np.int32)
    out_p = np.zeros((len(idx), k), dtype=np.float32)
    sel = np.arange(len(idx)) if rows is None else np.asarray(rows)
    if len(sel) == 0:
        return out_idx, out_p
    cand, p = idx[sel], probs[sel].astype(np.float64)
    valid = cand >= 0
    mass = np.where(valid, p, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        adj = np.log(np.maximum(p, 1e-300)) - beta * np.log1p(popularity[np.where(valid, cand, 0)])
    adj = np.where(valid, adj, -np.inf)
    top = adj.max(axis=1, keepdims=True)
    w = np.where(valid, np.exp(adj - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = w.sum(axis=1, keepdims=True)
    new_p = np.where(total > 0, mass * w / np.where(total > 0, total, 1.0), 0.0)
    # A stable sort keeps the model's order between equal scores (and at beta = 0).
    order = np.argsort(-new_p, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(cand, order, axis=1)
    picked_p = np.take_along_axis(new_p, order, axis=1)
    ok = np.take_along_axis(valid, order, axis=1)
    width = order.shape[1]
    out_idx[sel, :width] = np.where(ok, picked, -1)
    out_p[sel, :width] = np.where(ok, picked_p, 0.0)
    return out_idx, out_p


@dataclass
class DebiasChoice:
    """The chosen beta and what every beta scored on the validation split."""

    beta: float
    tolerance_se: float
    validation_users: int
    table: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"beta": self.beta, "tolerance_se": self.tolerance_se, "validation_users": self.validation_users,
                "candidates": RERANK_CANDIDATES, "validation": self.table}  # fmt: skip


def debias_tune(
    *,
    validation: Split,
    idx: np.ndarray,
    probs: np.ndarray,
    popularity: np.ndarray,
    betas: list[float],
    tolerance_se: float,
    k: int,
    allowed: np.ndarray | None = None,
    recent: int,
    decay: float,
) -> DebiasChoice:
    """Choose beta on `validation` (only its train part and held-out items are read).

    Rule, fixed before any measurement: the best validation HR@10 over `betas`, then
    the beta with the highest validation coverage@10 among those whose HR@10 is within
    `tolerance_se` standard errors (sqrt(h (1 - h) / users)) of that best; ties go to
    the smaller beta. A difference smaller than one standard error is not evidence that
    one beta ranks better, so it buys catalogue coverage instead; with tolerance 0 the
    rule is "most accurate beta".
    """
    n_items = len(idx)
    users = validation.eval_users
    rows = np.unique(recent_items(validation.train, users, recent))
    rows = rows[rows >= 0]
    table: list[dict[str, float]] = []
    for beta in sorted(set(betas)):
        b_idx, b_p = debias_rerank(idx=idx, probs=probs, popularity=popularity, beta=beta, k=k, rows=rows)
        top = rank_from_neighbours(nbr_idx=b_idx, nbr_score=b_p, train=validation.train, users=users,
                                   n_items=n_items, recent=recent, decay=decay)  # fmt: skip
        m = metrics_of(top, validation.heldout)
        table.append({"beta": beta, "hr10": round(m.hr, 4), "ndcg10": round(m.ndcg, 4),
                      "coverage10": round(coverage_of(top, n_items, allowed=allowed), 4)})  # fmt: skip
    if not table or len(users) == 0:
        return DebiasChoice(beta=0.0, tolerance_se=tolerance_se, validation_users=0, table=table)
    best = max(row["hr10"] for row in table)
    se = float(np.sqrt(best * (1.0 - best) / len(users)))
    eligible = [row for row in table if row["hr10"] >= best - tolerance_se * se - 1e-12]
    chosen = max(eligible, key=lambda row: (row["coverage10"], -row["beta"]))
    return DebiasChoice(beta=chosen["beta"], tolerance_se=tolerance_se, validation_users=len(users), table=table)
