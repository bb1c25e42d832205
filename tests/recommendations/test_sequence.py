"""The exported SASRec and its NumPy forward pass (recommendations.serving.sequence):
the same scores as the TensorFlow model, and no TensorFlow in the importing process."""

import os
import subprocess
import sys

import numpy as np

from recommendations.serving.sequence import (
    sequence_model_dumps,
    sequence_model_loads,
    sequence_rows,
    sequence_scores,
)
from recommendations.training.data import Interactions, holdout_split, validation_split


def _trained():  # noqa: ANN202
    import tensorflow as tf

    from recommendations.training.sasrec import SasrecParams, sasrec_export, sasrec_fit

    # 30 users walk a cycle of 8 products from different starts (240 events).
    rows = [(u, (u + t) % 8, float(t)) for u in range(30) for t in range(8)]
    users, items, ts = (np.array(c) for c in zip(*rows, strict=True))
    inter = Interactions(users.astype(np.int64), items.astype(np.int32), ts, np.ones(len(rows), np.float32))
    split = holdout_split(inter)
    params = SasrecParams(dim=16, max_len=6, blocks=2, heads=2, dropout=0.2, learning_rate=0.01, batch_size=16,
                          num_sampled=4, max_epochs=3, eval_every=3)  # fmt: skip
    fit = sasrec_fit(validation=validation_split(split), n_items=8, params=params)
    return fit.model, sasrec_export(fit.model), tf


def test_numpy_forward_pass_gives_the_tensorflow_models_scores():
    model, exported, tf = _trained()
    # Short histories (left padding), a full one, one longer than max_len (its last 6 kept), an empty one.
    histories = [[3], [5, 6], [0, 1, 2, 3, 4, 5], [7, 0, 1, 2, 3, 4, 5, 6], []]
    rows = sequence_rows(exported, histories)
    assert rows[1].tolist() == [0, 0, 0, 0, 6, 7] and rows[3].tolist() == [2, 3, 4, 5, 6, 7]
    h = model(tf.constant(rows.astype(np.int32)))[:, -1]
    expected = (tf.matmul(h, model.items.embeddings[1:], transpose_b=True) + model.out_bias[1:]).numpy()
    reloaded = sequence_model_loads(sequence_model_dumps(exported))
    got = sequence_scores(reloaded, histories)
    assert got.shape == (5, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert reloaded.max_len == 6 and reloaded.n_items == 8 and len(reloaded.blocks) == 2


def test_the_forward_pass_runs_without_importing_tensorflow():
    # A web process's imports: Django set up, the whole serving package, then a pass.
    code = (
        "import sys, django, numpy as np\n"
        "django.setup()\n"
        "import recommendations.serving\n"
        "from recommendations.serving.sequence import SequenceBlock, SequenceModel, sequence_scores\n"
        "r = np.random.default_rng(0); d, h, k = 8, 2, 4\n"
        "f = lambda *s: r.normal(size=s).astype(np.float32)\n"
        "b = SequenceBlock(f(d, h, k), f(h, k), f(d, h, k), f(h, k), f(d, h, k), f(h, k), f(h, k, d), f(d),\n"
        "                  f(d, d), f(d), f(d, d), f(d), f(d), f(d), f(d), f(d))\n"
        "m = SequenceModel(f(11, d), f(5, d), f(11), f(d), f(d), (b,))\n"
        "s = sequence_scores(m, [[1, 2, 3]])\n"
        "assert s.shape == (1, 10), s.shape\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras', 'torch', 'jax')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"})  # fmt: skip
    assert out.stdout.strip() == "[]"
