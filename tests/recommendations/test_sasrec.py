"""The SASRec candidate (bench only): it trains on the validation split, picks its
epochs there, and ranks without the user's own products."""

import numpy as np

from recommendations.training.data import Interactions, holdout_split, validation_split
from recommendations.training.sasrec import SasrecParams, sasrec_fit, sasrec_rank


def test_sasrec_learns_a_fixed_order_and_never_recommends_owned_products():
    # 40 users walk the same cycle 0 -> 1 -> ... -> 5 from different starts; the next item is always known.
    rows = [(u, (u + t) % 6, float(t)) for u in range(40) for t in range(5)]
    users, items, ts = (np.array(c) for c in zip(*rows, strict=True))
    inter = Interactions(users.astype(np.int64), items.astype(np.int32), ts, np.ones(len(rows), np.float32))
    split = holdout_split(inter)
    validation = validation_split(split)
    params = SasrecParams(dim=16, max_len=5, blocks=1, dropout=0.0, learning_rate=0.01, batch_size=16,
                          num_sampled=3, max_epochs=30, eval_every=10)  # fmt: skip
    fit = sasrec_fit(validation=validation, n_items=6, params=params, refit=split.train)
    assert [epoch for epoch, _ in fit.validation_hr] == [10, 20, 30] and fit.epochs in (10, 20, 30)
    top = sasrec_rank(fit.model, split.train, split.eval_users, top_n=2)
    # Each user owns 4 of the 6 products: the 2 left are ranked, the held-out next one first.
    owned = {u: set(items[users == u][:4].tolist()) for u in range(40)}
    assert all(not set(top[row].tolist()) & owned[u] for row, u in enumerate(split.eval_users.tolist()))
    assert (top[:, 0] == split.heldout).mean() == 1.0
