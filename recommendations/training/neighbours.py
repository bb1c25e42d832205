"""The top related products of every product, computed in batches.

For a batch of products, score every candidate with one matrix product, drop the
product itself and candidates that may not be recommended, keep the top k and turn
scores into probabilities over all candidates (a log-sum-exp per row), so lists of
different products can be summed when serving combines a user's recent items.
Memory is batch x products floats (2,048 x 100,000 x 4 B = 800 MB at most).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

RELATED_K = 20


def related_top_k(
    *,
    ctx: np.ndarray,
    tgt: np.ndarray,
    bias: np.ndarray,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    k: int = RELATED_K,
    batch: int = 2048,
    cosine: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, probabilities) of the k best candidates for each of `rows` (all
    items by default). `allowed` masks candidates (active products); -1 pads lists
    shorter than k."""
    n = len(tgt)
    rows = np.arange(n) if rows is None else rows
    if cosine:
        ctx = ctx / np.maximum(np.linalg.norm(ctx, axis=1, keepdims=True), 1e-9)
        tgt = tgt / np.maximum(np.linalg.norm(tgt, axis=1, keepdims=True), 1e-9)
        bias = np.zeros_like(bias)
    t = tf.constant(tgt.astype(np.float32))
    b = tf.constant(bias.astype(np.float32))[None, :]
    penalty = None
    if allowed is not None:
        penalty = tf.constant(np.where(allowed, 0.0, -1e9).astype(np.float32))[None, :]
    kk = min(k, max(n - 1, 0))
    out_idx = np.full((len(rows), k), -1, dtype=np.int32)
    out_p = np.zeros((len(rows), k), dtype=np.float32)
    if kk == 0 or len(rows) == 0:
        return out_idx, out_p
    for start in range(0, len(rows), batch):
        sel = rows[start : start + batch]
        scores = tf.matmul(tf.constant(ctx[sel].astype(np.float32)), t, transpose_b=True) + b
        if cosine:
            scores = scores * 10.0  # a sharper softmax so probabilities are not flat
        self_mask = tf.one_hot(tf.constant(sel), n, on_value=-1e9, off_value=0.0)
        scores = scores + self_mask
        if penalty is not None:
            scores = scores + penalty
        lse = tf.reduce_logsumexp(scores, axis=1, keepdims=True)
        values, idx = tf.math.top_k(scores, k=kk)
        probs = tf.exp(values - lse).numpy()
        idx = idx.numpy()
        valid = values.numpy() > -1e8
        out_idx[start : start + len(sel), :kk] = np.where(valid, idx, -1)
        out_p[start : start + len(sel), :kk] = np.where(valid, probs, 0.0)
        if on_progress is not None:
            on_progress(min(start + batch, len(rows)), len(rows))
    return out_idx, out_p
