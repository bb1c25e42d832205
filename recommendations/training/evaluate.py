"""HR@10 / NDCG@10 under the protocol of shared/data/README.md, for the model as it
is served (neighbour lists combined from a user's recent items) and two baselines
on the same split: popularity and co-occurrence cosine item-kNN.

Ranking is over the whole catalogue with the user's own items excluded; an item no
neighbour list reaches has no score, so it is never ranked (as in a dense argsort,
where such items tie at zero below every scored one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recommendations.training.data import Interactions, Split, recent_items, user_bounds

TOP_N = 10
KNN_NEIGHBOURS = 20
KNN_RECENT = 5


@dataclass
class Metrics:
    hr: float
    ndcg: float
    users: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_hr10": round(self.hr, 4), f"{prefix}_ndcg10": round(self.ndcg, 4)}


def metrics_of(top: np.ndarray, heldout: np.ndarray) -> Metrics:
    """`top`: (users, N) ranked item indexes (-1 = empty slot)."""
    if len(heldout) == 0:
        return Metrics(0.0, 0.0, 0)
    hits = top == heldout[:, None]
    hit_rows, hit_pos = np.nonzero(hits)
    hr = len(hit_rows) / len(heldout)
    ndcg = float(np.sum(1.0 / np.log2(hit_pos + 2))) / len(heldout)
    return Metrics(hr, ndcg, len(heldout))


def owned_keys(train: Interactions, users: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted keys row*n_items+item of every training item of the evaluated users."""
    starts, ends = user_bounds(train.users)
    user_ids = train.users[starts]
    pos = np.searchsorted(user_ids, users)
    pos_c = np.minimum(pos, max(len(user_ids) - 1, 0))
    found = (pos < len(user_ids)) & (user_ids[pos_c] == users) if len(user_ids) else np.zeros(len(users), bool)
    lengths = np.where(found, ends[pos_c] - starts[pos_c], 0)
    rows = np.repeat(np.arange(len(users)), lengths)
    offsets = np.repeat(starts[pos_c] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    items = train.items[np.arange(lengths.sum()) + offsets]
    return np.sort(rows.astype(np.int64) * n_items + items)


def top_unowned(scores: np.ndarray, owned: np.ndarray, start: int, top_n: int = TOP_N) -> np.ndarray:
    """Top `top_n` item indexes per row of a full-catalogue score block (rows
    start.. of the evaluated users), the rows' owned items (owned_keys) excluded;
    -1 where fewer are left. `scores` is overwritten."""
    n_items = scores.shape[1]
    lo, hi = np.searchsorted(owned, [start * n_items, (start + len(scores)) * n_items])
    mine = owned[lo:hi]
    scores[mine // n_items - start, mine % n_items] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_n]
    # Owned products (-inf) never fill a slot, even when the catalogue is small.
    order = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)
    out = np.full((len(scores), top_n), -1, np.int64)
    out[:, : order.shape[1]] = order
    return out


def rank_from_neighbours(
    *,
    nbr_idx: np.ndarray,
    nbr_score: np.ndarray,
    train: Interactions,
    users: np.ndarray,
    n_items: int,
    recent: int = KNN_RECENT,
    decay: float = 1.0,
    top_n: int = TOP_N,
) -> np.ndarray:
    """Top `top_n` items per user: the sum, over the user's last `recent` items
    (weighted decay**age, newest age 0), of those items' neighbour scores,
    excluding everything the user already has. Returns (len(users), top_n), -1 padded.
    """
    last = recent_items(train, users, recent)  # (U, recent), -1 padded
    weights = decay ** np.arange(recent, dtype=np.float64)
    rows = np.repeat(np.arange(len(users)), recent)
    src = last.ravel()
    w = np.tile(weights, len(users))
    ok = src >= 0
    rows, src, w = rows[ok], src[ok], w[ok]
    k = nbr_idx.shape[1]
    cand = nbr_idx[src].ravel()
    score = (nbr_score[src] * w[:, None]).ravel()
    rows = np.repeat(rows, k)
    ok = cand >= 0
    keys = rows[ok].astype(np.int64) * n_items + cand[ok]
    score = score[ok]
    out = np.full((len(users), top_n), -1, dtype=np.int64)
    if len(keys) == 0:
        return out
    uniq, inverse = np.unique(keys, return_inverse=True)
    total = np.bincount(inverse, weights=score)
    owned = owned_keys(train, users, n_items)
    keep = ~np.isin(uniq, owned, assume_unique=False)
    uniq, total = uniq[keep], total[keep]
    r = uniq // n_items
    item = uniq % n_items
    order = np.lexsort((item, -total, r))
    r, item = r[order], item[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    rank = np.arange(len(r)) - np.repeat(starts, np.diff(np.r_[starts, len(r)]))
    sel = rank < top_n
    out[r[sel], rank[sel]] = item[sel]
    return out


def rank_popular(*, popularity: np.ndarray, train: Interactions, users: np.ndarray, top_n: int = TOP_N) -> np.ndarray:
    """The most popular items each user does not have yet."""
    n_items = len(popularity)
    order = np.lexsort((np.arange(n_items), -popularity))
    owned = owned_keys(train, users, n_items)
    out = np.full((len(users), top_n), -1, dtype=np.int64)
    head = order[: top_n * 4]
    for row in range(len(users)):
        lo, hi = np.searchsorted(owned, [row * n_items, (row + 1) * n_items])
        mine = set((owned[lo:hi] - row * n_items).tolist())
        pool = head if len(mine) < len(head) - top_n else order
        picked = [i for i in pool[: top_n + len(mine)] if i not in mine][:top_n]
        out[row, : len(picked)] = picked
    return out


def user_item_matrix(train: Interactions, n_items: int) -> sp.csr_matrix:
    """Binary users x items matrix of the (deduplicated) training interactions."""
    n_users = int(train.users.max()) + 1 if len(train) else 0
    data = np.ones(len(train), dtype=np.float32)
    return sp.csr_matrix((data, (train.users, train.items)), shape=(n_users, n_items))


def topk_rows(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of a sparse matrix, (-1, 0)-padded."""
    n = matrix.shape[0]
    idx = np.full((n, k), -1, dtype=np.int32)
    val = np.zeros((n, k), dtype=np.float32)
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for row in range(n):
        lo, hi = indptr[row], indptr[row + 1]
        if lo == hi:
            continue
        cols, vals = indices[lo:hi], data[lo:hi]
        if hi - lo > k:
            part = np.argpartition(-vals, k - 1)[:k]
            cols, vals = cols[part], vals[part]
        order = np.lexsort((cols, -vals))
        idx[row, : len(order)] = cols[order]
        val[row, : len(order)] = vals[order]
    return idx, val


def itemknn_neighbours(train: Interactions, n_items: int, k: int = KNN_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Co-occurrence cosine item-kNN: sim(i, j) = |U_i & U_j| / sqrt(|U_i| |U_j|),
    the `k` most similar items of each item (the baseline of the data README)."""
    x = user_item_matrix(train, n_items)
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    inv = sp.diags(1.0 / norms)
    sim = (inv @ co @ inv).tocsr()
    return topk_rows(sim, k)


def coverage_of(top: np.ndarray, n_items: int, *, allowed: np.ndarray | None = None) -> float:
    """Coverage@N: distinct products in the evaluated users' top lists / active
    products (`allowed`; every product when None)."""
    active = n_items if allowed is None else int(np.count_nonzero(allowed))
    if active == 0:
        return 0.0
    shown = np.unique(top[top >= 0])
    if allowed is not None:
        shown = shown[allowed[shown]]
    return len(shown) / active


def gini_of(top: np.ndarray, n_items: int, *, allowed: np.ndarray | None = None) -> float:
    """Gini index of how often each active product is recommended in the top lists:
    0 when every product is shown equally often, towards 1 when a few take all the
    slots. Products never shown count, as zeros (otherwise a recommender that shows
    ten products to everyone would score 0). G = sum_i (2i - n - 1) x_i / (n sum x),
    x ascending, i from 1."""
    counts = np.bincount(top[top >= 0], minlength=n_items).astype(np.float64)
    if allowed is not None:
        counts = counts[allowed]
    n, total = len(counts), counts.sum()
    if n == 0 or total == 0:
        return 0.0
    x = np.sort(counts)
    rank = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * rank - n - 1) * x) / (n * total))


def ild_of(top: np.ndarray, vectors: np.ndarray, *, chunk: int = 4096) -> float:
    """Intra-list diversity: the mean over lists of the mean pairwise cosine
    dissimilarity 1 - cos(v_a, v_b) of the list's products, by the model's item
    (target) vectors. Lists with fewer than two products are left out.

    By item vectors, not category paths: every project has vectors, many catalogs
    (Online Retail) have no categories. The same vectors measure the model and the
    baselines of one run; figures of two versions use two models' vectors.
    Pairs come from |sum v|^2 = sum |v|^2 + 2 sum_pairs v_a.v_b, chunked by users."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    total, lists = 0.0, 0
    for start in range(0, len(top), chunk):
        block = top[start : start + chunk]
        valid = block >= 0
        v = unit[np.where(valid, block, 0)] * valid[..., None]
        m = valid.sum(axis=1).astype(np.float64)
        s = v.sum(axis=1, dtype=np.float64)
        self_dots = (v.astype(np.float64) ** 2).sum(axis=(1, 2))
        pair_cos = ((s * s).sum(axis=1) - self_dots) / 2
        pairs = m * (m - 1) / 2
        ok = pairs > 0
        total += float(np.sum(1.0 - pair_cos[ok] / pairs[ok]))
        lists += int(ok.sum())
    return total / lists if lists else 0.0


@dataclass
class ListQuality:
    """Accuracy and catalogue metrics of one recommender's top-10 lists."""

    accuracy: Metrics
    coverage: float
    gini: float
    ild: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {**self.accuracy.as_dict(prefix), f"{prefix}_coverage10": round(self.coverage, 4),
                f"{prefix}_gini10": round(self.gini, 4), f"{prefix}_ild10": round(self.ild, 4)}  # fmt: skip


def list_quality(
    top: np.ndarray, heldout: np.ndarray, *, n_items: int, allowed: np.ndarray | None, vectors: np.ndarray
) -> ListQuality:
    return ListQuality(
        accuracy=metrics_of(top, heldout),
        coverage=coverage_of(top, n_items, allowed=allowed),
        gini=gini_of(top, n_items, allowed=allowed),
        ild=ild_of(top, vectors),
    )


@dataclass
class Evaluation:
    model: ListQuality
    popularity: ListQuality
    itemknn: ListQuality

    def as_dict(self) -> dict[str, float]:
        return {
            **self.model.as_dict("model"),
            **self.popularity.as_dict("popularity"),
            **self.itemknn.as_dict("itemknn"),
            "eval_users": self.model.accuracy.users,
        }


def evaluate_split(
    *,
    split: Split,
    n_items: int,
    nbr_idx: np.ndarray,
    nbr_score: np.ndarray,
    vectors: np.ndarray,
    allowed: np.ndarray | None = None,
    recent: int = KNN_RECENT,
    decay: float = 1.0,
) -> Evaluation:
    """The model (as served) and both baselines on one split: HR@10, NDCG@10,
    coverage@10 of the active products (`allowed`), Gini and intra-list diversity
    (by `vectors`, the model's item vectors, for all three)."""
    users, held = split.eval_users, split.heldout
    top = rank_from_neighbours(
        nbr_idx=nbr_idx, nbr_score=nbr_score, train=split.train, users=users, n_items=n_items,
        recent=recent, decay=decay,
    )  # fmt: skip
    pop = np.bincount(split.train.items, minlength=n_items).astype(np.float64)
    top_pop = rank_popular(popularity=pop, train=split.train, users=users)
    knn_idx, knn_score = itemknn_neighbours(split.train, n_items)
    top_knn = rank_from_neighbours(
        nbr_idx=knn_idx, nbr_score=knn_score, train=split.train, users=users, n_items=n_items
    )
    quality = {"n_items": n_items, "allowed": allowed, "vectors": vectors}
    return Evaluation(
        model=list_quality(top, held, **quality),
        popularity=list_quality(top_pop, held, **quality),
        itemknn=list_quality(top_knn, held, **quality),
    )
