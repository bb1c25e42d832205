"""A trained SASRec (recommendations.training.sasrec) as plain NumPy arrays, and its
forward pass: what a web process needs to score a user's next item from their recent
items without importing TensorFlow (the training package's), which costs a serving
process ~0.5 GB and seconds of start-up.

The arrays are exported by `recommendations.training.sasrec.sasrec_export`; the pass
repeats the Keras model's inference arithmetic exactly (dropout off, the same left
padding, the padded positions still attended to, as in training), so its scores agree
with the TensorFlow model's to float32 rounding (tests/recommendations/test_sequence.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import numpy as np

LAYER_NORM_EPSILON = 1e-8  # the Keras model's LayerNormalization(epsilon=1e-8)


@dataclass(frozen=True)
class SequenceBlock:
    """One causal self-attention block. Attention weights keep Keras' einsum shapes:
    q/k/v (dim, heads, head_dim) and biases (heads, head_dim); output (heads, head_dim, dim)."""

    q_w: np.ndarray
    q_b: np.ndarray
    k_w: np.ndarray
    k_b: np.ndarray
    v_w: np.ndarray
    v_b: np.ndarray
    o_w: np.ndarray
    o_b: np.ndarray
    ffn1_w: np.ndarray
    ffn1_b: np.ndarray
    ffn2_w: np.ndarray
    ffn2_b: np.ndarray
    norm1_g: np.ndarray
    norm1_b: np.ndarray
    norm2_g: np.ndarray
    norm2_b: np.ndarray


_BLOCK_ARRAYS = tuple(field.name for field in fields(SequenceBlock))


@dataclass(frozen=True)
class SequenceModel:
    """`items`: (n_items + 1, dim), row 0 padding, item i at row i + 1 (the
    training's dense product index, the version's `meta.json` product order);
    `positions`: (max_len, dim); `out_bias`: (n_items + 1,)."""

    items: np.ndarray
    positions: np.ndarray
    out_bias: np.ndarray
    final_g: np.ndarray
    final_b: np.ndarray
    blocks: tuple[SequenceBlock, ...]

    @property
    def max_len(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.items.shape[0]) - 1

    def as_arrays(self) -> dict[str, np.ndarray]:
        out = {"items": self.items, "positions": self.positions, "out_bias": self.out_bias,
               "final_g": self.final_g, "final_b": self.final_b}  # fmt: skip
        for n, block in enumerate(self.blocks):
            out.update({f"block{n}_{name}": getattr(block, name) for name in _BLOCK_ARRAYS})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SequenceModel:
        count = sum(1 for key in arrays if key.endswith("_q_w"))
        blocks = tuple(
            SequenceBlock(**{name: np.asarray(arrays[f"block{n}_{name}"], np.float32) for name in _BLOCK_ARRAYS})
            for n in range(count)
        )
        top = {k: np.asarray(arrays[k], np.float32) for k in ("items", "positions", "out_bias", "final_g", "final_b")}
        return cls(blocks=blocks, **top)


def sequence_model_dumps(model: SequenceModel) -> bytes:
    """The model as an .npz payload (a version's `sequence.npz` artefact)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **model.as_arrays())
    return buffer.getvalue()


def sequence_model_loads(payload: bytes) -> SequenceModel:
    with np.load(io.BytesIO(payload)) as arrays:
        return SequenceModel.from_arrays(dict(arrays))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPSILON) * gamma + beta


def sequence_rows(model: SequenceModel, histories: list[list[int]]) -> np.ndarray:
    """(len(histories), max_len) model rows (item + 1, 0 = padding), left-padded, from
    each history's item indexes oldest first (its last max_len kept), as in training."""
    out = np.zeros((len(histories), model.max_len), np.int64)
    for row, history in enumerate(histories):
        chunk = np.asarray(history[-model.max_len :], np.int64) + 1
        if len(chunk):
            out[row, model.max_len - len(chunk) :] = chunk
    return out


def sequence_hidden(model: SequenceModel, rows: np.ndarray) -> np.ndarray:
    """The last step's output (batch, dim) for padded item rows (batch, max_len): the
    user's state, whose dot product with an item's embedding scores it as the next."""
    dim = model.items.shape[1]
    length = rows.shape[1]
    mask = (rows > 0).astype(np.float32)[..., None]
    x = model.items[rows] * np.float32(dim**0.5) + model.positions[:length][None]
    x = x * mask
    # Causal: step t attends to steps <= t, padded ones included (the Keras model
    # does not mask them either, so neither may this pass).
    causal = np.tril(np.ones((length, length), bool))
    for block in model.blocks:
        query_in = _layer_norm(x, block.norm1_g, block.norm1_b)
        head_dim = block.q_w.shape[2]
        q = np.einsum("bld,dhk->blhk", query_in, block.q_w) + block.q_b
        k = np.einsum("bld,dhk->blhk", x, block.k_w) + block.k_b
        v = np.einsum("bld,dhk->blhk", x, block.v_w) + block.v_b
        logits = np.einsum("bqhk,bshk->bhqs", q * np.float32(1.0 / np.sqrt(head_dim)), k)
        logits = np.where(causal, logits, np.float32(-1e9))
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=-1, keepdims=True)
        attended = np.einsum("bhqs,bshk->bqhk", weights, v)
        x = x + np.einsum("bqhk,hkd->bqd", attended, block.o_w) + block.o_b
        normed = _layer_norm(x, block.norm2_g, block.norm2_b)
        hidden = np.maximum(normed @ block.ffn1_w + block.ffn1_b, 0.0)
        x = x + hidden @ block.ffn2_w + block.ffn2_b
        x = x * mask
    return _layer_norm(x[:, -1], model.final_g, model.final_b).astype(np.float32)


def sequence_scores(model: SequenceModel, histories: list[list[int]]) -> np.ndarray:
    """(len(histories), n_items) scores of every item as each user's next, from their
    item indexes oldest first; higher is likelier. Excluding owned items is the caller's."""
    hidden = sequence_hidden(model, sequence_rows(model, histories))
    return hidden @ model.items[1:].T + model.out_bias[1:]
