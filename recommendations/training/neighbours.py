"""The top related products of every product, computed in batches.

For a batch of products, score every candidate with one matrix product (plus the
candidates' bias, and -1e9 for products that may not be recommended), keep the
top k+1 and drop the product itself. Scores become probabilities over all
candidates, so the lists of a user's recent items can be summed when serving.
The normaliser sum_j exp(s_ij) is exact over the top k and estimated from a
fixed random sample of the other candidates (RELATED_NORM_SAMPLE of them): a full
log-sum-exp over 100,000 candidates cost as much as the top-k itself and changes
only the scale of a row, not its order. Memory: batch x products floats
(1,024 x 100,000 x 4 B = 400 MB).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

RELATED_K = 20
RELATED_NORM_SAMPLE = 8192


def related_top_k(
    *,
    ctx: np.ndarray,
    tgt: np.ndarray,
    bias: np.ndarray,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    k: int = RELATED_K,
    batch: int = 1024,
    cosine: bool = False,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, probabilities) of the k best candidates for each of `rows` (all
    items by default). `allowed` masks candidates (active products); -1 pads lists
    shorter than k."""
    n = len(tgt)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if cosine:
        ctx = ctx / np.maximum(np.linalg.norm(ctx, axis=1, keepdims=True), 1e-9) * 10.0  # a sharper softmax
        tgt = tgt / np.maximum(np.linalg.norm(tgt, axis=1, keepdims=True), 1e-9)
        bias = np.zeros_like(bias)
    bias = bias.astype(np.float32)
    if allowed is not None:
        bias = np.where(allowed, bias, np.float32(-1e9))
    # The bias rides along as one more dimension (ctx . 1 + bias): no separate
    # batch x products addition, which cost a fifth of the stage.
    ctx = np.hstack([ctx.astype(np.float32), np.ones((len(ctx), 1), np.float32)])
    tgt_b = np.hstack([tgt.astype(np.float32), bias[:, None]])
    t = tf.constant(tgt_b)
    out_idx = np.full((len(rows), k), -1, dtype=np.int32)
    out_p = np.zeros((len(rows), k), dtype=np.float32)
    kk = min(k + 1, n)
    if n < 2 or len(rows) == 0:
        return out_idx, out_p
    sample = None
    if n > RELATED_NORM_SAMPLE * 2:
        sample = tf.constant(tgt_b[np.random.default_rng(seed).choice(n, RELATED_NORM_SAMPLE, replace=False)])
    for start in range(0, len(rows), batch):
        sel = rows[start : start + batch]
        c = tf.constant(ctx[sel])
        scores = tf.matmul(c, t, transpose_b=True)
        values, idx = tf.math.top_k(scores, k=kk)
        if sample is None:
            log_z = tf.reduce_logsumexp(scores, axis=1, keepdims=True).numpy()
        else:
            log_z = _sampled_log_z(tf.matmul(c, sample, transpose_b=True), values, n)
        values, idx = values.numpy(), idx.numpy()
        # Drop the product itself (or the (k+1)-th when it is not among them).
        is_self = idx == sel[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk - 1)
        keep = np.ones_like(is_self)
        keep[np.arange(len(sel)), drop] = False
        values = values[keep].reshape(len(sel), kk - 1)[:, :k]
        idx = idx[keep].reshape(len(sel), kk - 1)[:, :k]
        valid = values > -1e8
        width = values.shape[1]
        out_idx[start : start + len(sel), :width] = np.where(valid, idx, -1)
        out_p[start : start + len(sel), :width] = np.where(valid, np.exp(values - log_z), 0.0)
        if on_progress is not None:
            on_progress(min(start + batch, len(rows)), len(rows))
    return out_idx, out_p


def _sampled_log_z(sample_scores: tf.Tensor, top_values: tf.Tensor, n: int) -> np.ndarray:
    """log sum_j exp(s_ij): the top candidates exactly, the rest scaled up from a sample."""
    top = top_values.numpy().astype(np.float64)
    shift = top[:, :1]
    top_mass = np.exp(top - shift).sum(axis=1, keepdims=True)
    sampled = sample_scores.numpy().astype(np.float64)
    # Sampled entries at or above the k-th score are already counted in the top mass.
    below = np.where(sampled < top[:, -1:], np.exp(sampled - shift), 0.0)
    rest = below.sum(axis=1, keepdims=True) * (n - top.shape[1]) / sampled.shape[1]
    return (shift + np.log(top_mass + rest)).astype(np.float32)
