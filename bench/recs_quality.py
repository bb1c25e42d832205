"""Recommendation quality study: the model variants against the baselines under the
protocol of ../shared/data/README.md, on Online Retail (purchases) and the demo store.

    nice .venv/bin/python bench/recs_quality.py [--data online_retail,ms_demo_store] [--variants mf,item_w1]

Prints one line per (data set, variant) and one JSON object on the last line. Every
figure is computed by the same code the pipeline runs (recommendations.training):
each variant trains on the validation split's training part (the last two items of
each user withheld), beta of the popularity debiasing is chosen on the validation
split (the last-but-one items) by `rerank.debias_tune`, and the figures are on the
test split (the last items): HR@10, NDCG@10, coverage@10, Gini@10 and intra-list
diversity by the model's item vectors, for the model before (beta 0) and after the
re-ranking, item-kNN and popularity. `test_by_beta` gives the test figure of every
beta tried, for the record: it is printed after the choice and does not enter it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from recommendations.training.data import (  # noqa: E402
    Interactions,
    dedupe_last,
    holdout_split,
    recent_items,
    user_bounds,
    validation_split,
)
from recommendations.training.evaluate import (  # noqa: E402
    itemknn_neighbours,
    list_quality,
    owned_keys,
    rank_from_neighbours,
    rank_popular,
    top_unowned,
)
from recommendations.training.features import ProductInfo, build_features  # noqa: E402
from recommendations.training.model import (  # noqa: E402
    ItemFeatures,
    ModelParams,
    item_vectors,
    refit_params,
    train_model,
    weights_state,
)
from recommendations.training.neighbours import RELATED_K, related_top_k  # noqa: E402
from recommendations.training.rerank import RERANK_CANDIDATES, debias_rerank, debias_tune  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SERVED = (5, 0.8)  # last 5 items, newest weighted 1, each older one 0.8 times less (as served)
BASELINE = (5, 1.0)  # the README's item-kNN rule: last 5 items, equal weights
# The pipeline's defaults (config/settings.py RECS_DEBIAS_*), fixed before measuring.
BETAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]
TOLERANCE_SE = 1.0

VARIANTS: dict[str, dict] = {
    "item_w1": {},  # the defaults: item pairs one step apart, side features, 6 epochs
    "item_w1_no_side": {"id_dropout": 0.0, "side": False},
    "mf_dropout10": {"context": "user", "epochs": 6, "id_dropout": 0.1},
    "mf": {"context": "user", "epochs": 6, "id_dropout": 0.25},
    "mf_no_side": {"context": "user", "epochs": 6, "id_dropout": 0.0, "side": False},
    "item_w3": {"context": "item", "window": 3, "epochs": 4},
    "gru": {"context": "gru", "seq_len": 5, "epochs": 4},
}
# The pipeline's defaults (ModelParams); variants override a few.
COMMON = {"learning_rate": 0.01, "temperature": 1.0, "dim": 64, "batch_size": 1024, "max_examples": 4_000_000,
          "context": "item", "window": 1, "epochs": 6}  # fmt: skip


def load_online_retail() -> tuple[Interactions, list[ProductInfo]]:
    df = pd.read_csv(
        DATA / "online_retail" / "online_retail.csv.gz",
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "float64"},
    )
    df = df[df.CustomerID.notna() & (df.Quantity > 0) & ~df.InvoiceNo.str.startswith("C")]
    ts = pd.to_datetime(df.InvoiceDate).astype("int64").to_numpy() / 1e9
    users = df.CustomerID.astype("category").cat.codes.to_numpy().astype(np.int64)
    items = df.StockCode.astype("category")
    codes = items.cat.codes.to_numpy().astype(np.int32)
    info = df.assign(code=codes).groupby("code").agg(desc=("Description", "last"), price=("UnitPrice", "median"))
    infos = [
        ProductInfo(name=r.desc if isinstance(r.desc, str) else "", price=float(r.price)) for r in info.itertuples()
    ]
    return Interactions(users, codes, ts, np.ones(len(df), np.float32)), infos


def load_demo_store() -> tuple[Interactions, list[ProductInfo]]:
    usage = pd.read_csv(DATA / "ms_demo_store" / "demoUsage.csv", header=None, names=["user", "item", "ts"])
    catalog = pd.read_csv(DATA / "ms_demo_store" / "demoCatalog.csv", header=None, names=["item", "name", "category"])
    ids = pd.Index(pd.concat([catalog.item, usage.item]).unique())
    ts = pd.to_datetime(usage.ts, format="%Y/%m/%dT%H:%M:%S").astype("int64").to_numpy() / 1e9
    users = usage.user.astype("category").cat.codes.to_numpy().astype(np.int64)
    infos: list[ProductInfo] = [ProductInfo() for _ in range(len(ids))]
    for row in catalog.itertuples():
        infos[ids.get_loc(row.item)] = ProductInfo(name=row.name, categories=[row.category])
    items = ids.get_indexer(usage.item).astype(np.int32)
    return Interactions(users, items, ts, np.ones(len(usage), np.float32)), infos


def protocol(inter: Interactions, n_items: int):  # noqa: ANN201
    seqs = dedupe_last(inter, n_items=n_items)
    starts, ends = user_bounds(seqs.users)
    seqs = seqs.take(np.isin(seqs.users, seqs.users[starts[(ends - starts) >= 3]]))
    return holdout_split(seqs)


def quality(split, top: np.ndarray, n_items: int, vectors: np.ndarray) -> dict:  # noqa: ANN001
    q = list_quality(top, split.heldout, n_items=n_items, allowed=None, vectors=vectors)
    return {"hr10": round(q.accuracy.hr, 4), "ndcg10": round(q.accuracy.ndcg, 4), "coverage10": round(q.coverage, 4),
            "gini10": round(q.gini, 4), "ild10": round(q.ild, 4)}  # fmt: skip


def score(split, n_items: int, idx: np.ndarray, val: np.ndarray, rule: tuple[int, float],  # noqa: ANN001
          vectors: np.ndarray) -> dict:  # fmt: skip
    top = rank_from_neighbours(nbr_idx=idx, nbr_score=val, train=split.train, users=split.eval_users,
                               n_items=n_items, recent=rule[0], decay=rule[1])  # fmt: skip
    return quality(split, top, n_items, vectors)


# What a profile keeps of its recent purchases (crm.models.RECENT_ITEMS_LIMIT): the
# history serving hands the sequence model.
RECENT_KEPT = 10


def django_for_serving() -> None:
    """Settings only to import the serving package (its __init__ reads Django models);
    nothing here queries a database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    import django

    django.setup()


def sequence_rank(exported, train: Interactions, users: np.ndarray, n_items: int, keep: int) -> np.ndarray:  # noqa: ANN001
    """Top 10 per user by recommendations.serving.sequence (no TensorFlow) from the
    user's last `keep` training items, every owned item excluded (the protocol)."""
    from recommendations.serving.sequence import sequence_scores

    last = recent_items(train, users, keep)  # newest first, -1 padded
    histories = [[int(i) for i in row[::-1] if i >= 0] for row in last]
    owned = owned_keys(train, users, n_items)
    out = np.full((len(users), 10), -1, np.int64)
    for start in range(0, len(users), 512):
        scores = sequence_scores(exported, histories[start : start + 512])
        out[start : start + len(scores)] = top_unowned(scores, owned, start, 10)
    return out


def cold_start(split, n_items: int, infos: list[ProductInfo], n_cold: int = 300) -> dict:  # noqa: ANN001
    """Products nobody has touched: hide every interaction with `n_cold` random
    products (of those with 5+ users), train, and compare their lists (from side
    features alone) with their item-kNN neighbours on the full training data."""
    users_per_item = np.bincount(split.train.items, minlength=n_items)
    rng = np.random.default_rng(7)
    eligible = np.flatnonzero(users_per_item >= 5)
    n_cold = min(n_cold, len(eligible) // 10)  # at most a tenth of the catalogue goes cold
    cold = np.sort(rng.choice(eligible, n_cold, replace=False))
    warm = split.train.take(~np.isin(split.train.items, cold))
    params = ModelParams(**COMMON)
    result = train_model(seqs=warm, n_items=n_items, n_users=int(split.train.users.max()) + 1,
                         feats=build_features(infos)[0], params=params)  # fmt: skip
    known = np.bincount(warm.items, minlength=n_items) > 0
    ctx, tgt, bias = item_vectors(result.model, known)
    idx, _ = related_top_k(ctx=ctx, tgt=tgt, bias=bias, rows=cold)
    truth, _ = itemknn_neighbours(split.train, n_items)
    popular = np.argsort(-users_per_item * known)[:20]

    def overlap(lists: np.ndarray) -> float:
        return float(
            np.mean([len(set(a[a >= 0]) & set(truth[c][truth[c] >= 0])) / 20 for a, c in zip(lists, cold, strict=True)])
        )

    return {
        "cold_products": n_cold,
        "model_overlap_with_knn20": round(overlap(idx), 4),
        "popular_overlap_with_knn20": round(overlap(np.tile(popular, (n_cold, 1))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="online_retail,ms_demo_store")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cold-start", action="store_true", help="also measure lists of untouched products")
    parser.add_argument("--sasrec", action="store_true", help="also measure the SASRec candidate (a forward "
                        "pass per user; ILD by its own item embeddings)")  # fmt: skip
    parser.add_argument("--sasrec-seed", type=int, default=0)
    parser.add_argument("--refit", choices=["none", "warm", "full"], default="warm",
                        help="after tuning, train on the test split's training part: one warm pass (as the "
                             "pipeline), from scratch, or not at all (serve the validation model)")  # fmt: skip
    args = parser.parse_args()
    loaders = {"online_retail": load_online_retail, "ms_demo_store": load_demo_store}
    report: dict = {}
    for name in args.data.split(","):
        inter, infos = loaders[name]()
        n_items = len(infos)
        split = protocol(inter, n_items)
        validation = validation_split(split)
        out: dict = {"users": int(len(split.eval_users)), "items": int(len(np.unique(split.train.items))),
                     "validation_users": int(len(validation.eval_users))}  # fmt: skip
        pop = np.bincount(split.train.items, minlength=n_items).astype(float)
        top_pop = rank_popular(popularity=pop, train=split.train, users=split.eval_users)
        k_idx, k_val = itemknn_neighbours(split.train, n_items)
        baselines: dict = {}
        print(name, "split", json.dumps(out), flush=True)
        for variant in args.variants.split(","):
            spec = dict(VARIANTS[variant])
            side = spec.pop("side", True)
            feats = build_features(infos)[0] if side else ItemFeatures.empty(n_items)
            params = ModelParams(**{**COMMON, **spec})
            started = time.monotonic()
            result = train_model(seqs=validation.train, n_items=n_items, n_users=int(inter.users.max()) + 1,
                                 feats=feats, params=params)  # fmt: skip
            popularity = np.bincount(validation.train.items, minlength=n_items).astype(np.float64)
            ctx, tgt, bias = item_vectors(result.model, popularity > 0)
            cand_idx, cand_p = related_top_k(ctx=ctx, tgt=tgt, bias=bias, k=RERANK_CANDIDATES,
                                             cosine=params.context == "user")  # fmt: skip
            choice = debias_tune(validation=validation, idx=cand_idx, probs=cand_p, popularity=popularity,
                                 betas=BETAS, tolerance_se=TOLERANCE_SE, k=RELATED_K, recent=SERVED[0],
                                 decay=SERVED[1])  # fmt: skip
            if args.refit != "none":
                init = weights_state(result.model) if args.refit == "warm" else None
                result = train_model(seqs=split.train, n_items=n_items, n_users=int(inter.users.max()) + 1,
                                     feats=feats, params=refit_params(params) if init else params,
                                     init_from=init)  # fmt: skip
                popularity = np.bincount(split.train.items, minlength=n_items).astype(np.float64)
                ctx, tgt, bias = item_vectors(result.model, popularity > 0)
                cand_idx, cand_p = related_top_k(ctx=ctx, tgt=tgt, bias=bias, k=RERANK_CANDIDATES,
                                                 cosine=params.context == "user")  # fmt: skip
            train_s = round(time.monotonic() - started, 1)
            if not baselines:
                # Measured once per data set, by the first variant's item vectors (ILD).
                baselines = {"popularity": quality(split, top_pop, n_items, tgt),
                             "itemknn": score(split, n_items, k_idx, k_val, BASELINE, tgt),
                             "itemknn_served_rule": score(split, n_items, k_idx, k_val, SERVED, tgt)}  # fmt: skip
                out.update(baselines)
                print(name, "baselines", json.dumps(baselines), flush=True)
            by_beta = {}
            for beta in sorted({0.0, choice.beta, *BETAS}):
                idx, val = debias_rerank(idx=cand_idx, probs=cand_p, popularity=popularity, beta=beta, k=RELATED_K)
                by_beta[beta] = score(split, n_items, idx, val, SERVED, tgt)
            idx, val = debias_rerank(idx=cand_idx, probs=cand_p, popularity=popularity, beta=choice.beta, k=RELATED_K)
            row = {
                "before_beta0": by_beta[0.0],
                "served": by_beta[choice.beta],
                "baseline_rule": score(split, n_items, idx, val, BASELINE, tgt),
                "debias": choice.as_dict(),
                "test_by_beta": {str(b): v for b, v in by_beta.items()},
                "train_s": train_s,
                "examples": result.examples,
            }
            row["vs_itemknn"] = round(row["served"]["hr10"] / max(out["itemknn"]["hr10"], 1e-9), 3)
            out[variant] = row
            print(name, variant, json.dumps(row), flush=True)
        if args.sasrec:
            from recommendations.training.sasrec import SasrecParams, sasrec_export, sasrec_fit, sasrec_rank

            fit = sasrec_fit(validation=validation, n_items=n_items, params=SasrecParams(seed=args.sasrec_seed),
                             refit=split.train if args.refit != "none" else None)  # fmt: skip
            top = sasrec_rank(fit.model, split.train, split.eval_users)
            vectors = fit.model.items.embeddings.numpy()[1:]
            row = {"test": quality(split, top, n_items, vectors), "epochs": fit.epochs,
                   "validation_hr10": fit.validation_hr, "train_s": round(fit.seconds, 1)}  # fmt: skip
            # The served path: the exported weights, the NumPy forward pass, over the
            # whole history the model reads (max_len) and over what a profile keeps.
            django_for_serving()
            exported = sasrec_export(fit.model)
            for label, keep in (("numpy_full_history", exported.max_len), ("numpy_profile_recent", RECENT_KEPT)):
                top = sequence_rank(exported, split.train, split.eval_users, n_items, keep)
                row[label] = {**quality(split, top, n_items, vectors), "history": keep}
            row["vs_itemknn"] = round(row["test"]["hr10"] / max(out["itemknn"]["hr10"], 1e-9), 3)
            out["sasrec"] = row
            print(name, "sasrec", json.dumps(row), flush=True)
        if args.cold_start:
            out["cold_start"] = cold_start(split, n_items, infos)
            print(name, "cold_start", json.dumps(out["cold_start"]), flush=True)
        report[name] = out
    print(json.dumps(report))


if __name__ == "__main__":
    main()
