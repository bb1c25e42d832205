"""Cost of one user's sequence-model answer in a web process: the NumPy forward pass
(recommendations.serving.sequence) over a profile's 10 recent items, the scores of
every product, and the top 100 of them (what a picker would filter), timed per call.

    nice .venv/bin/python bench/sequence_serving.py [--products 100000,3665] [--samples 2000]

Weights are random with the trained model's shapes (dim 64, 50 positions, 2 blocks,
1 head): the cost does not depend on their values. Prints one JSON object on the
last line: per catalogue size, p50 / p99 ms of the pass alone and of pass + scores + top 100.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Settings only to import the serving package (its __init__ reads Django models).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

import django  # noqa: E402

django.setup()

from recommendations.serving.sequence import (  # noqa: E402
    SequenceBlock,
    SequenceModel,
    sequence_hidden,
    sequence_rows,
)


def random_model(n_items: int, dim: int = 64, max_len: int = 50, blocks: int = 2, heads: int = 1) -> SequenceModel:
    rng = np.random.default_rng(0)

    def f(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) * 0.1).astype(np.float32)

    k = dim // heads
    made = tuple(
        SequenceBlock(
            f(dim, heads, k),
            f(heads, k),
            f(dim, heads, k),
            f(heads, k),
            f(dim, heads, k),
            f(heads, k),
            f(heads, k, dim),
            f(dim),
            f(dim, dim),
            f(dim),
            f(dim, dim),
            f(dim),
            f(dim) + 1,
            f(dim),
            f(dim) + 1,
            f(dim),
        )  # fmt: skip
        for _ in range(blocks)
    )
    return SequenceModel(f(n_items + 1, dim), f(max_len, dim), f(n_items + 1), f(dim) + 1, f(dim), made)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", default="100000,3665")
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    report = {}
    for n in map(int, args.products.split(",")):
        model = random_model(n)
        rng = np.random.default_rng(1)
        table, bias = model.items[1:], model.out_bias[1:]
        pass_ms, total_ms = [], []
        for sample in range(args.samples + 200):
            history = rng.integers(0, n, 10).tolist()
            started = time.perf_counter()
            hidden = sequence_hidden(model, sequence_rows(model, [history]))
            middle = time.perf_counter()
            scores = table @ hidden[0] + bias
            top = np.argpartition(-scores, 100)[:100]
            top = top[np.argsort(-scores[top])]
            ended = time.perf_counter()
            if sample >= 200:  # the first calls warm the caches
                pass_ms.append((middle - started) * 1000)
                total_ms.append((ended - started) * 1000)
        report[str(n)] = {
            "pass_p50_ms": round(float(np.percentile(pass_ms, 50)), 3),
            "pass_p99_ms": round(float(np.percentile(pass_ms, 99)), 3),
            "total_p50_ms": round(float(np.percentile(total_ms, 50)), 3),
            "total_p99_ms": round(float(np.percentile(total_ms, 99)), 3),
        }
        print(n, json.dumps(report[str(n)]), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
