"""Interaction arrays and the evaluation split.

Everything here is numpy over integer indexes: users and products are mapped to
0..n-1 once, so a 5M-interaction history is a few tens of MB, not Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interactions:
    """One row per interaction. `users` and `items` are dense indexes."""

    users: np.ndarray  # int64
    items: np.ndarray  # int32
    ts: np.ndarray  # float64, seconds
    weights: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> Interactions:
        return Interactions(self.users[index], self.items[index], self.ts[index], self.weights[index])


def dedupe_last(inter: Interactions, *, n_items: int) -> Interactions:
    """Sort by (user, time) and collapse each (user, item) to its last occurrence,
    keeping the largest weight it had (a viewed-then-bought item counts as bought).

    Ties in time keep their input order (a stable sort), so items of one basket
    stay in the order they were listed.
    """
    if len(inter) == 0:
        return inter
    order = np.lexsort((np.arange(len(inter)), inter.ts, inter.users))
    s = inter.take(order)
    key = s.users.astype(np.int64) * n_items + s.items
    # Largest weight per key, then keep the last occurrence of each key.
    key_order = np.argsort(key, kind="stable")
    sorted_keys = key[key_order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    max_w = np.maximum.reduceat(s.weights[key_order], starts)
    last_pos = key_order[np.r_[starts[1:], len(key)] - 1]
    weight_of_last = np.empty(len(key), dtype=np.float32)
    weight_of_last[last_pos] = max_w
    keep = np.sort(last_pos)
    out = s.take(keep)
    out.weights = weight_of_last[keep]
    return out


def user_bounds(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each user's run in arrays sorted by user."""
    if len(users) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return starts, ends


@dataclass
class Split:
    """`train`: every interaction but the held-out ones, sorted by (user, time).
    `eval_users` / `heldout`: the evaluated users and the item each one did last."""

    train: Interactions
    eval_users: np.ndarray
    heldout: np.ndarray


def holdout_split(seqs: Interactions, *, min_items: int = 3, max_eval_users: int | None = None, seed: int = 0) -> Split:
    """The protocol of shared/data/README.md on deduplicated, time-ordered sequences:
    among users with at least `min_items` items, hold out each one's last item.

    With `max_eval_users`, a random sample of those users is evaluated and only their
    last items are withheld: on a 500k-user store this keeps the served model's data
    nearly whole while the metrics keep a small sampling error (~0.3 points at 20k users).
    """
    starts, ends = user_bounds(seqs.users)
    eligible = np.flatnonzero(ends - starts >= min_items)
    if max_eval_users is not None and len(eligible) > max_eval_users:
        rng = np.random.default_rng(seed)
        eligible = np.sort(rng.choice(eligible, size=max_eval_users, replace=False))
    last = ends[eligible] - 1
    mask = np.ones(len(seqs), dtype=bool)
    mask[last] = False
    return Split(train=seqs.take(mask), eval_users=seqs.users[last], heldout=seqs.items[last])


def recent_items(train: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """The last `k` training items of each of `users` (sorted ids), newest first,
    padded with -1: shape (len(users), k)."""
    starts, ends = user_bounds(train.users)
    user_ids = train.users[starts]
    pos = np.searchsorted(user_ids, users)
    found = (pos < len(user_ids)) & (user_ids[np.minimum(pos, len(user_ids) - 1)] == users)
    out = np.full((len(users), k), -1, dtype=np.int64)
    for j in range(k):
        idx = ends[np.minimum(pos, len(ends) - 1)] - 1 - j
        ok = found & (idx >= starts[np.minimum(pos, len(starts) - 1)])
        out[ok, j] = train.items[idx[ok]]
    return out


def validation_split(split: Split) -> Split:
    """The validation split inside a test split: each evaluated user's last training
    item (their last-but-one item, by time) is held out, the rest is the validation
    training data. Tuning reads only this; the test split's held-out items are not
    in it, so a choice made here cannot follow the test figure.

    Users with a single training item are left out (nothing would remain to
    recommend from); with the protocol's 3 items per user there are none.
    """
    starts, ends = user_bounds(split.train.users)
    user_ids = split.train.users[starts]
    pos = np.searchsorted(user_ids, split.eval_users)
    pos_c = np.minimum(pos, max(len(user_ids) - 1, 0))
    found = (pos < len(user_ids)) & (user_ids[pos_c] == split.eval_users) if len(user_ids) else pos < 0
    ok = found & (ends[pos_c] - starts[pos_c] >= 2)
    last = ends[pos_c[ok]] - 1
    mask = np.ones(len(split.train), dtype=bool)
    mask[last] = False
    return Split(train=split.train.take(mask), eval_users=split.eval_users[ok], heldout=split.train.items[last])
