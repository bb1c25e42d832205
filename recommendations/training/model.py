"""The product-correlation model: Keras towers trained with an in-batch softmax.

Architecture (chosen by measurement, see docs/recommendations.md):
- An item tower maps a product to a vector: its id embedding plus a side tower over
  catalogue features (words of name and description, categories, price band). During
  training the id embedding is dropped for a share of examples, so the side tower
  alone must place a product well: that is what serves cold start, where a product
  nobody has touched gets its vector from its features only.
- Two item towers (context and target, like word2vec's input and output vectors) are
  trained on pairs (an item a user had, an item the same user had within the next
  `window` steps of their time-ordered history) with a softmax over the batch's
  targets, corrected for the targets' sampling frequency (logQ), plus a per-target
  bias. The score s(i, j) = ctx(i) . tgt(j) + b(j) then estimates log P(j next | i).
- Variants measured in the quality study: `context="gru"` encodes the last few items
  with a GRU (a sequence model; the related list of i is the model's answer to the
  one-item history [i]); `context="user"` learns a free user vector (matrix
  factorisation), related items by the cosine of their item vectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from recommendations.training.data import Interactions, user_bounds  # noqa: E402


@dataclass
class ModelParams:
    """Defaults: the variant chosen in docs/recommendations.md (item pairs one step
    apart, with the side-feature item tower)."""

    context: str = "item"  # item (item2vec-like pairs) | user (matrix factorisation) | gru (sequence)
    dim: int = 64
    window: int = 1  # item: pairs up to this many steps apart
    symmetric: bool = False
    epochs: int = 6
    batch_size: int = 1024  # smaller on small data: at most a 20th of the examples
    learning_rate: float = 0.01
    id_dropout: float = 0.25
    temperature: float = 1.0
    # Compute budget: examples seen over all epochs (each epoch samples its share)...
    max_examples: int = 4_000_000
    # ...and at least this many steps, so a small store is not undertrained.
    min_steps: int = 600
    seq_len: int = 5  # gru: items of history
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ItemFeatures:
    """Side features per item index: padded id matrices (0 = padding)."""

    words: np.ndarray  # (n_items, max_words) int32
    categories: np.ndarray  # (n_items, max_categories) int32
    price_band: np.ndarray  # (n_items,) int32, 0 = unknown
    n_words: int
    n_categories: int
    n_bands: int

    @classmethod
    def empty(cls, n_items: int) -> ItemFeatures:
        z = np.zeros((n_items, 1), np.int32)
        return cls(z, z.copy(), np.zeros(n_items, np.int32), 1, 1, 1)


class ItemTower(keras.layers.Layer):
    def __init__(self, n_items: int, feats: ItemFeatures, dim: int, name: str) -> None:
        super().__init__(name=name)
        self.n_items = n_items
        self.words = tf.constant(feats.words)
        self.cats = tf.constant(feats.categories)
        self.bands = tf.constant(feats.price_band)
        init = keras.initializers.RandomNormal(stddev=0.05)
        # Fixed names: saved weights are matched by variable path (weights_state).
        self.id_emb = keras.layers.Embedding(n_items, dim, embeddings_initializer=init, name=f"{name}_id")
        self.word_emb = keras.layers.Embedding(
            feats.n_words + 1, dim, embeddings_initializer=init, name=f"{name}_words"
        )
        self.cat_emb = keras.layers.Embedding(
            feats.n_categories + 1, dim, embeddings_initializer=init, name=f"{name}_categories"
        )
        self.band_emb = keras.layers.Embedding(
            feats.n_bands + 1, dim, embeddings_initializer=init, name=f"{name}_bands"
        )
        self.side = keras.layers.Dense(dim, name=f"{name}_side")

    @staticmethod
    def _bag(emb: keras.layers.Embedding, ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(ids > 0, tf.float32)[..., None]
        total = tf.reduce_sum(emb(ids) * mask, axis=-2)
        return total / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)

    def side_vector(self, items: tf.Tensor) -> tf.Tensor:
        words = self._bag(self.word_emb, tf.gather(self.words, items))
        cats = self._bag(self.cat_emb, tf.gather(self.cats, items))
        band = self.band_emb(tf.gather(self.bands, items))
        return self.side(tf.concat([words, cats, band], axis=-1))

    def call(self, items: tf.Tensor, id_keep: tf.Tensor) -> tf.Tensor:
        return self.id_emb(items) * id_keep[..., None] + self.side_vector(items)


class CorrelationModel(keras.Model):
    def __init__(self, n_items: int, n_users: int, feats: ItemFeatures, params: ModelParams) -> None:
        super().__init__(name="recs")
        self.params = params
        self.n_items = n_items
        self.target = ItemTower(n_items, feats, params.dim, "target")
        self.bias = keras.layers.Embedding(n_items, 1, embeddings_initializer="zeros", name="bias")
        if params.context == "user":
            self.user_emb = keras.layers.Embedding(
                max(n_users, 1),
                params.dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05),
                name="users",
            )
        else:
            self.context = ItemTower(n_items, feats, params.dim, "context")
        if params.context == "gru":
            self.gru = keras.layers.GRU(params.dim, name="gru")

    def context_vectors(self, ctx: tf.Tensor, id_keep: tf.Tensor) -> tf.Tensor:
        """ctx: (B,) item ids for "item", (B, L) -1-padded histories for "gru", user ids for "user"."""
        if self.params.context == "user":
            return self.user_emb(ctx)
        if self.params.context == "gru":
            valid = ctx >= 0
            keep = tf.broadcast_to(id_keep[:, None], tf.shape(ctx))
            vec = self.context(tf.maximum(ctx, 0), keep)
            return self.gru(vec, mask=valid)
        return self.context(ctx, id_keep)


def _training_examples(
    seqs: Interactions, params: ModelParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, target, weight) arrays from time-ordered sequences."""
    users, items, weights = seqs.users, seqs.items, seqs.weights
    n = len(items)
    if params.context == "user":
        ctx, tgt, w = users, items.astype(np.int64), weights
    elif params.context == "gru":
        starts, _ = user_bounds(users)
        first = np.repeat(starts, np.diff(np.r_[starts, n]))
        pos = np.arange(n)
        has_prev = pos > first
        tgt_pos = pos[has_prev]
        L = params.seq_len
        ctx = np.full((len(tgt_pos), L), -1, dtype=np.int64)
        for j in range(L):  # newest item last, as the GRU reads it
            src = tgt_pos - (L - j)
            ok = src >= first[has_prev]
            ctx[ok, j] = items[src[ok]]
        tgt, w = items[tgt_pos].astype(np.int64), weights[tgt_pos]
    else:
        ctx_l, tgt_l, w_l = [], [], []
        for d in range(1, params.window + 1):
            same = users[d:] == users[:-d]
            a, b = items[:-d][same], items[d:][same]
            wd = weights[d:][same] / d
            ctx_l.append(a)
            tgt_l.append(b)
            w_l.append(wd)
            if params.symmetric:
                ctx_l.append(b)
                tgt_l.append(a)
                w_l.append(weights[:-d][same] / d)
        ctx = np.concatenate(ctx_l).astype(np.int64) if ctx_l else np.zeros(0, np.int64)
        tgt = np.concatenate(tgt_l).astype(np.int64) if tgt_l else np.zeros(0, np.int64)
        w = np.concatenate(w_l).astype(np.float32) if w_l else np.zeros(0, np.float32)
    return ctx, tgt, w.astype(np.float32)


@dataclass
class TrainResult:
    model: CorrelationModel
    examples: int
    epochs_loss: list[float]
    seconds: float


def train_model(
    *,
    seqs: Interactions,
    n_items: int,
    n_users: int,
    feats: ItemFeatures,
    params: ModelParams,
    init_from: dict[str, np.ndarray] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train (or, with `init_from`, continue training) on time-ordered sequences.

    `init_from` (weights_state of an earlier model) is the online update: the new
    model starts from the old weights (rows of new products and words start fresh).
    """
    started = time.monotonic()
    keras.utils.set_random_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = CorrelationModel(n_items, n_users, feats, params)
    ctx, tgt, w = _training_examples(seqs, params, rng)
    # log Q correction: targets are sampled in proportion to their frequency.
    freq = np.bincount(tgt, weights=w, minlength=n_items).astype(np.float64) + 1.0
    log_q = tf.constant(np.log(freq / freq.sum()).astype(np.float32))
    _build(model, params)
    if init_from is not None:
        _copy_weights(init_from, model)
    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate)
    lazy = LazyAdam(model, learning_rate=params.learning_rate)
    temperature = params.temperature

    @tf.function(reduce_retracing=True)
    def step(c: tf.Tensor, t: tf.Tensor, wt: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(t)[0]
        keep_c = tf.cast(tf.random.uniform([batch]) >= params.id_dropout, tf.float32)
        keep_t = tf.cast(tf.random.uniform([batch]) >= params.id_dropout, tf.float32)
        with tf.GradientTape() as tape:
            cv = model.context_vectors(c, keep_c)
            tv = model.target(t, keep_t)
            logits = tf.matmul(cv, tv, transpose_b=True) / temperature
            logits += tf.transpose(model.bias(t))  # (1, B) per target
            logits -= tf.gather(log_q, t)[None, :]
            # The same target twice in a batch is not a negative of itself.
            dup = tf.logical_and(tf.equal(t[:, None], t[None, :]), tf.logical_not(tf.eye(batch, dtype=tf.bool)))
            logits = tf.where(dup, tf.fill(tf.shape(logits), -1e9), logits)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(batch), logits=logits)
            loss = tf.reduce_sum(loss * wt) / tf.reduce_sum(wt)
        grads = tape.gradient(loss, model.trainable_variables)
        dense = lazy.apply(grads, model.trainable_variables)
        optimizer.apply_gradients(dense)
        return loss

    losses: list[float] = []
    n = len(tgt)
    bs, epochs, per_epoch = _schedule(n, params)
    steps_per_epoch = max(1, (per_epoch + bs - 1) // bs)
    done = 0
    for _epoch in range(epochs if n else 0):
        order = rng.permutation(n)[:per_epoch]
        total, count = 0.0, 0
        for s in range(0, per_epoch, bs):
            idx = order[s : s + bs]
            if len(idx) < 2:
                continue
            loss = step(tf.constant(ctx[idx]), tf.constant(tgt[idx]), tf.constant(w[idx]))
            total += float(loss) if (count % 50 == 0) else 0.0
            count += 1
            done += 1
            if on_progress is not None and done % 100 == 0:
                on_progress(done, steps_per_epoch * epochs)
        losses.append(total / max(1, (count + 49) // 50))
    return TrainResult(model=model, examples=n, epochs_loss=losses, seconds=time.monotonic() - started)


def refit_params(params: ModelParams) -> ModelParams:
    """The refit after tuning: one pass, an epoch's share of the budget, continuing
    from the validation model's weights (`train_model(init_from=...)`). It adds the
    items the validation split withheld (each evaluated user's last-but-one) at a
    sixth of a full training's cost, where a second training from scratch would
    double the train stage."""
    return replace(params, epochs=1, max_examples=max(1, params.max_examples // max(params.epochs, 1)),
                   min_steps=max(1, params.min_steps // max(params.epochs, 1)))  # fmt: skip


def _schedule(n: int, params: ModelParams) -> tuple[int, int, int]:
    """(batch size, epochs, examples per epoch) for `n` examples within the budget."""
    if n == 0:
        return params.batch_size, 0, 0
    bs = max(2, min(params.batch_size, max(32, n // 20)))
    epochs = max(params.epochs, min(500, -(-params.min_steps * bs // n)))
    per_epoch = min(n, max(bs, params.max_examples // epochs))
    return bs, epochs, per_epoch


class LazyAdam:
    """Adam for the embedding tables that updates only the rows a batch touched.

    Keras' Adam turns an embedding's sparse gradient into a dense update of the
    whole table: with 500,000 user rows that made a step cost ~0.4 s instead of
    ~25 ms on 2 cores (bench/training.py). Like TF Addons' LazyAdam, the moments of
    rows not in the batch are not decayed, which is the usual trade for speed.
    """

    def __init__(self, model: keras.Model, *, learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7) -> None:  # fmt: skip
        self.lr, self.b1, self.b2, self.eps = learning_rate, beta_1, beta_2, epsilon
        self.step = tf.Variable(0.0, trainable=False)
        self.slots: dict[str, tuple[tf.Variable, tf.Variable]] = {}
        for var in model.trainable_variables:
            if var.path.endswith("embeddings"):
                self.slots[var.path] = (
                    tf.Variable(tf.zeros(var.shape), trainable=False),
                    tf.Variable(tf.zeros(var.shape), trainable=False),
                )

    def apply(self, grads: list, variables: list) -> list[tuple]:
        """Update the sparse ones in place; return (gradient, variable) pairs of the rest."""
        self.step.assign_add(1.0)
        b1, b2 = self.b1, self.b2
        lr_t = self.lr * tf.sqrt(1.0 - tf.pow(b2, self.step)) / (1.0 - tf.pow(b1, self.step))
        dense = []
        for grad, var in zip(grads, variables, strict=True):
            slots = self.slots.get(var.path)
            if slots is None or not isinstance(grad, tf.IndexedSlices):
                dense.append((grad, var))
                continue
            m, v = slots
            rows, pos = tf.unique(grad.indices)
            g = tf.math.unsorted_segment_sum(grad.values, pos, tf.shape(rows)[0])
            m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * g
            v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(g)
            m.scatter_update(tf.IndexedSlices(m_rows, rows))
            v.scatter_update(tf.IndexedSlices(v_rows, rows))
            var.value.scatter_sub(tf.IndexedSlices(lr_t * m_rows / (tf.sqrt(v_rows) + self.eps), rows))
        return dense


def _build(model: CorrelationModel, params: ModelParams) -> None:
    """Create every variable with a dummy batch (Keras builds layers lazily)."""
    t = tf.zeros([2], tf.int64)
    keep = tf.ones([2])
    c = tf.zeros([2, params.seq_len], tf.int64) if params.context == "gru" else t
    model.context_vectors(c, keep)
    model.target(t, keep)
    model.bias(t)
    model.built = True


def weights_state(model: CorrelationModel) -> dict[str, np.ndarray]:
    """Every variable by its path: what the artifact stores."""
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def _copy_weights(old: dict[str, np.ndarray], new: CorrelationModel) -> None:
    """Copy every variable; tables that grew (new products, new words) keep their new rows."""
    for var in new.weights:
        value = old.get(var.path)
        if value is None:
            continue
        target = np.asarray(var.numpy()).copy()
        if value.shape == target.shape:
            var.assign(value)
        elif value.ndim == target.ndim and all(a <= b for a, b in zip(value.shape, target.shape, strict=True)):
            target[tuple(slice(0, s) for s in value.shape)] = value
            var.assign(target)


def item_vectors(model: CorrelationModel, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, target, bias) vectors of every item. Items not `known` (no
    interactions in training) get their vectors from side features alone."""
    items = tf.range(model.n_items, dtype=tf.int64)
    keep = tf.constant(known.astype(np.float32))
    tgt = model.target(items, keep).numpy()
    bias = model.bias(items).numpy()[:, 0]
    if model.params.context == "user":
        ctx = tgt
    elif model.params.context == "gru":
        ctx = model.context_vectors(tf.reshape(items, [-1, 1]), keep).numpy()
    else:
        ctx = model.context(items, keep).numpy()
    return ctx, tgt, bias
