"""A self-attentive sequential recommender (SASRec, Kang and McAuley 2018), trained
with a sampled softmax: a candidate of issue 16, measured in bench/recs_quality.py
(`--sasrec`), not wired into the pipeline (docs/recommendations.md says why).

Each user's time-ordered history (the last `max_len` items of a random crop per
epoch) goes through item + position embeddings and `blocks` causal self-attention
blocks; the output at step t scores the item at t + 1 by a dot product with the
shared item embedding. The loss is tf.nn.sampled_softmax_loss against `num_sampled`
items drawn by training frequency (its log-Q correction keeps the estimate
unbiased), so the cost per step does not grow with the catalogue. Epochs are chosen
on a validation split by `sasrec_fit` (every `eval_every` epochs, the best
validation HR@10 is kept), never on the test split.

Ranking needs a forward pass per user: the related lists (top 20 per product) of the
serving contract cannot carry it, which is why this stays a candidate unless it beats
the served model clearly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if TYPE_CHECKING:
    from recommendations.serving.sequence import SequenceModel

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from recommendations.training.data import Interactions, Split, user_bounds  # noqa: E402
from recommendations.training.evaluate import TOP_N, metrics_of, owned_keys, top_unowned  # noqa: E402


@dataclass
class SasrecParams:
    """The paper's settings for sparse data sets (d 50 there, 64 here as our model)."""

    dim: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    learning_rate: float = 0.001
    batch_size: int = 128
    num_sampled: int = 500
    max_epochs: int = 60
    eval_every: int = 10
    seed: int = 0


class Sasrec(keras.Model):
    def __init__(self, n_items: int, p: SasrecParams) -> None:
        super().__init__()
        self.n_items, self.p = n_items, p
        # Row 0 is padding; item i is row i + 1.
        self.items = keras.layers.Embedding(n_items + 1, p.dim, name="items")
        self.positions = keras.layers.Embedding(p.max_len, p.dim, name="positions")
        self.attn = [keras.layers.MultiHeadAttention(p.heads, p.dim // p.heads, dropout=p.dropout)
                     for _ in range(p.blocks)]  # fmt: skip
        self.ffn = [keras.Sequential([keras.layers.Dense(p.dim, activation="relu"), keras.layers.Dense(p.dim)])
                    for _ in range(p.blocks)]  # fmt: skip
        self.norm1 = [keras.layers.LayerNormalization(epsilon=1e-8) for _ in range(p.blocks)]
        self.norm2 = [keras.layers.LayerNormalization(epsilon=1e-8) for _ in range(p.blocks)]
        self.final = keras.layers.LayerNormalization(epsilon=1e-8)
        self.drop = keras.layers.Dropout(p.dropout)
        self.out_bias = tf.Variable(tf.zeros([n_items + 1]), name="out_bias")

    def call(self, seq: tf.Tensor, training: bool = False) -> tf.Tensor:
        mask = tf.cast(seq > 0, tf.float32)[..., None]
        x = self.items(seq) * (self.p.dim**0.5) + self.positions(tf.range(tf.shape(seq)[1]))[None]
        x = self.drop(x, training=training) * mask
        for attn, ffn, n1, n2 in zip(self.attn, self.ffn, self.norm1, self.norm2, strict=True):
            q = n1(x)
            x = x + attn(q, x, use_causal_mask=True, training=training)
            x = x + self.drop(ffn(n2(x)), training=training)
            x = x * mask
        return self.final(x)


def sasrec_export(model: Sasrec) -> SequenceModel:
    """The trained weights as NumPy arrays for recommendations.serving.sequence, whose
    forward pass gives the same scores without TensorFlow. Imported here: the serving
    package needs Django set up, which the bench's data loading does not."""
    from recommendations.serving.sequence import SequenceBlock, SequenceModel

    def arr(variable: object) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)

    blocks = []
    for attn, ffn, n1, n2 in zip(model.attn, model.ffn, model.norm1, model.norm2, strict=True):
        dense1, dense2 = ffn.layers
        blocks.append(SequenceBlock(
            q_w=arr(attn._query_dense.kernel), q_b=arr(attn._query_dense.bias),
            k_w=arr(attn._key_dense.kernel), k_b=arr(attn._key_dense.bias),
            v_w=arr(attn._value_dense.kernel), v_b=arr(attn._value_dense.bias),
            o_w=arr(attn._output_dense.kernel), o_b=arr(attn._output_dense.bias),
            ffn1_w=arr(dense1.kernel), ffn1_b=arr(dense1.bias), ffn2_w=arr(dense2.kernel), ffn2_b=arr(dense2.bias),
            norm1_g=arr(n1.gamma), norm1_b=arr(n1.beta), norm2_g=arr(n2.gamma), norm2_b=arr(n2.beta),
        ))  # fmt: skip
    return SequenceModel(
        items=arr(model.items.embeddings), positions=arr(model.positions.embeddings), out_bias=arr(model.out_bias),
        final_g=arr(model.final.gamma), final_b=arr(model.final.beta), blocks=tuple(blocks),
    )  # fmt: skip


def _sequences(train: Interactions, users: np.ndarray, max_len: int, rng: np.random.Generator | None) -> np.ndarray:
    """(len(users), max_len) item rows (item + 1, 0 = padding), left-padded: the last
    `max_len` items, or with `rng` a random crop ending anywhere after the first item."""
    starts, ends = user_bounds(train.users)
    pos = np.searchsorted(train.users[starts], users)
    out = np.zeros((len(users), max_len), np.int32)
    for row, p in enumerate(pos):
        lo, hi = starts[p], ends[p]
        if rng is not None and hi - lo > max_len:
            hi = int(rng.integers(lo + max_len, hi + 1))
        chunk = train.items[max(lo, hi - max_len) : hi] + 1
        out[row, max_len - len(chunk) :] = chunk
    return out


def sasrec_rank(model: Sasrec, train: Interactions, users: np.ndarray, top_n: int = TOP_N) -> np.ndarray:
    """Top `top_n` items per user from the last step's output over every item, the
    user's own items excluded."""
    owned = owned_keys(train, users, model.n_items)
    table = model.items.embeddings[1:]
    bias = model.out_bias[1:]
    out = np.full((len(users), top_n), -1, np.int64)
    for start in range(0, len(users), 1024):
        sel = users[start : start + 1024]
        h = model(tf.constant(_sequences(train, sel, model.p.max_len, None)))[:, -1]
        scores = (tf.matmul(h, table, transpose_b=True) + bias).numpy()
        out[start : start + len(sel)] = top_unowned(scores, owned, start, top_n)
    return out


@dataclass
class SasrecResult:
    model: Sasrec
    epochs: int
    validation_hr: list[tuple[int, float]]
    seconds: float


def sasrec_fit(
    *, validation: Split, n_items: int, params: SasrecParams | None = None, refit: Interactions | None = None
) -> SasrecResult:
    """Train on `validation.train`; every `eval_every` epochs score validation HR@10
    and keep the weights of the best (early stopping on validation only). With
    `refit` (the test split's training part), continue from those weights for a sixth
    of the chosen epochs on it, as the pipeline's warm refit adds the validation items."""
    p = params or SasrecParams()
    tf.random.set_seed(p.seed)
    rng = np.random.default_rng(p.seed)
    started = time.monotonic()
    model = Sasrec(n_items, p)
    model(tf.zeros((1, p.max_len), tf.int32))
    opt = keras.optimizers.Adam(p.learning_rate)
    counts = np.bincount(validation.train.items, minlength=n_items).astype(np.float64)
    unigrams = [1.0] + (counts + 1.0).tolist()  # row 0 (padding) is never a target

    def trainable_users(train: Interactions) -> np.ndarray:
        starts, ends = user_bounds(train.users)
        return train.users[starts][(ends - starts) >= 2]

    users = trainable_users(validation.train)
    sampled = min(p.num_sampled, n_items - 1)

    @tf.function(reduce_retracing=True)
    def step(seq: tf.Tensor) -> tf.Tensor:
        inputs, targets = seq[:, :-1], seq[:, 1:]
        with tf.GradientTape() as tape:
            h = model(inputs, training=True)
            flat_h = tf.reshape(h, [-1, p.dim])
            flat_t = tf.reshape(targets, [-1, 1])
            # A step predicts the next item from at least one real item.
            keep = tf.reshape((targets > 0) & (inputs > 0), [-1])
            flat_h, flat_t = tf.boolean_mask(flat_h, keep), tf.boolean_mask(flat_t, keep)
            negatives = tf.random.fixed_unigram_candidate_sampler(
                true_classes=tf.cast(flat_t, tf.int64), num_true=1, num_sampled=sampled, unique=True,
                range_max=n_items + 1, unigrams=unigrams,
            )  # fmt: skip
            loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(
                weights=model.items.embeddings, biases=model.out_bias, labels=tf.cast(flat_t, tf.int64),
                inputs=flat_h, num_sampled=sampled, num_classes=n_items + 1, sampled_values=negatives,
            ))  # fmt: skip
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    best: tuple[float, int, list[np.ndarray]] = (-1.0, 0, model.get_weights())
    history: list[tuple[int, float]] = []
    for epoch in range(1, p.max_epochs + 1):
        seqs = _sequences(validation.train, rng.permutation(users), p.max_len + 1, rng)
        for start in range(0, len(seqs), p.batch_size):
            step(tf.constant(seqs[start : start + p.batch_size]))
        if epoch % p.eval_every == 0 or epoch == p.max_epochs:
            hr = metrics_of(sasrec_rank(model, validation.train, validation.eval_users), validation.heldout).hr
            history.append((epoch, round(hr, 4)))
            if hr > best[0]:
                best = (hr, epoch, model.get_weights())
    model.set_weights(best[2])
    if refit is not None:
        refit_users = trainable_users(refit)
        for _ in range(max(1, best[1] // 6)):
            seqs = _sequences(refit, rng.permutation(refit_users), p.max_len + 1, rng)
            for start in range(0, len(seqs), p.batch_size):
                step(tf.constant(seqs[start : start + p.batch_size]))
    return SasrecResult(model=model, epochs=best[1], validation_hr=history, seconds=time.monotonic() - started)
