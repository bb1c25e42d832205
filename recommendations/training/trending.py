"""Trending products: popularity with exponential time decay, overall and per category.

score(p) = sum over interactions with p of weight * 2^(-age / half-life). Decay is
multiplicative, so an online update ages the previous scores by the time elapsed
and adds the new interactions: the same result as recomputing from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRENDING_N = 50
DAY = 86_400.0


def decayed_scores(
    *, items: np.ndarray, ts: np.ndarray, weights: np.ndarray, n_items: int, now: float, half_life_days: float
) -> np.ndarray:
    age_days = np.maximum(now - ts, 0.0) / DAY
    return np.bincount(items, weights=weights * np.exp2(-age_days / half_life_days), minlength=n_items)


def age_scores(scores: np.ndarray, *, elapsed_seconds: float, half_life_days: float) -> np.ndarray:
    return scores * np.exp2(-max(elapsed_seconds, 0.0) / DAY / half_life_days)


def trending_rows(
    *,
    scores: np.ndarray,
    product_ids: Sequence[str],
    categories: Sequence[Sequence[str]],
    allowed: np.ndarray,
    n: int = TRENDING_N,
) -> list[tuple[str, str, int, float]]:
    """(category, product_id, rank, score) rows: "" is the overall list."""
    candidates = np.flatnonzero(allowed & (scores > 0))
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    rows: list[tuple[str, str, int, float]] = []
    for rank, i in enumerate(order[:n], start=1):
        rows.append(("", product_ids[i], rank, float(scores[i])))
    per_category: dict[str, int] = {}
    for i in order:
        for category in categories[i]:
            rank = per_category.get(category, 0) + 1
            if rank > n:
                continue
            per_category[category] = rank
            rows.append((category[:255], product_ids[i], rank, float(scores[i])))
    return rows
