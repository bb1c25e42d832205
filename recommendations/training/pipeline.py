"""The training run, stage by stage: collect, train, related products, evaluate,
trending, then guarded activation (recommendations.services).

Runs only on the `ml` queue or in the train_recommendations command. A run works on
its own ModelVersion: its rows are written under its id and are served only after
activation, so a failed or interrupted run never changes what is served; a
retried run first deletes what an earlier attempt of the same version wrote.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import copy_rows
from crm.models import Event
from crm.vocabulary import VIEW
from recommendations import services
from recommendations.models import ModelVersion, RelatedProduct, TrendingProduct, VersionStatus
from recommendations.training.collect import collect_interactions, interaction_kinds, training_window
from recommendations.training.data import Interactions, dedupe_last, holdout_split, recent_items, validation_split
from recommendations.training.evaluate import evaluate_split
from recommendations.training.features import FeatureVocab, ProductInfo, build_features, category_path
from recommendations.training.model import (
    CorrelationModel,
    ModelParams,
    item_vectors,
    refit_params,
    train_model,
    weights_state,
)
from recommendations.training.neighbours import RELATED_K, related_top_k
from recommendations.training.rerank import RERANK_CANDIDATES, debias_rerank, debias_tune
from recommendations.training.trending import age_scores, decayed_scores, trending_rows

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
ROW_CHUNK = 200_000  # related rows per COPY (one transaction each)


@dataclass
class Catalog:
    """Every product the run knows: the catalog's, then ids only seen in events."""

    product_ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    infos: list[ProductInfo | None] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)
    updated_at: list[datetime | None] = field(default_factory=list)
    has_catalog: bool = False

    def add(self, product_id: str, info: ProductInfo | None = None, *, active: bool | None = None,
            updated_at: datetime | None = None) -> int:  # fmt: skip
        i = self.index.get(product_id)
        if i is None:
            i = len(self.product_ids)
            self.index[product_id] = i
            self.product_ids.append(product_id)
            self.infos.append(None)
            self.categories.append([])
            self.active.append(not self.has_catalog)
            self.updated_at.append(None)
        if info is not None:
            self.infos[i] = info
            self.categories[i] = category_path(info.categories)
        if active is not None:
            self.active[i] = active
        if updated_at is not None:
            self.updated_at[i] = updated_at
        return i

    @property
    def n(self) -> int:
        return len(self.product_ids)


def catalog_load(*, project_id: int, first_ids: list[str] | None = None) -> Catalog:
    """The project's catalog (catalog.selectors), in pk batches. `first_ids` keeps a
    parent model's item order so its embedding rows stay valid."""
    from catalog.selectors import products_iter

    cat = Catalog()
    for pid in first_ids or ():
        cat.add(pid)
    for batch in products_iter(project_id=project_id, batch=5000):
        if not cat.has_catalog and batch:
            cat.has_catalog = True
            cat.active = [False] * cat.n  # ids of the parent not in the catalog any more
        for p in batch:
            info = ProductInfo(
                name=p.name, description=p.description, categories=list(p.categories or []),
                price=float(p.price) if p.price is not None else None,
            )  # fmt: skip
            cat.add(p.product_id, info, active=p.is_active, updated_at=p.updated_at)
    return cat


@dataclass
class Loaded:
    inter: Interactions
    event_ids: np.ndarray
    profile_pks: np.ndarray  # user index -> profile pk


def interactions_load(paths: list[str], cat: Catalog) -> Loaded:
    """Read the collected chunks; unknown product ids join the catalogue."""
    weight_of = np.zeros(4, np.float32)
    weight_of[VIEW:] = settings.RECS_INTERACTION_WEIGHTS
    items_l, prof_l, ts_l, w_l, ev_l = [], [], [], [], []
    for path in paths:
        with default_storage.open(path, "rb") as fh:
            df = pd.read_csv(
                fh, compression="gzip", header=None, names=["event", "profile", "ts", "kind", "pid"],
                dtype={"event": np.int64, "profile": np.int64, "ts": np.float64, "kind": np.int8, "pid": str},
                keep_default_na=False,
            )  # fmt: skip
        codes, uniques = pd.factorize(df["pid"])
        mapping = np.fromiter((cat.add(u) for u in uniques), dtype=np.int32, count=len(uniques))
        items_l.append(mapping[codes])
        prof_l.append(df["profile"].to_numpy())
        ts_l.append(df["ts"].to_numpy())
        w_l.append(weight_of[df["kind"].to_numpy()])
        ev_l.append(df["event"].to_numpy())
    if not paths:
        empty = Interactions(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.float32))
        return Loaded(empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
    profiles = np.concatenate(prof_l)
    profile_pks, users = np.unique(profiles, return_inverse=True)
    inter = Interactions(users.astype(np.int64), np.concatenate(items_l), np.concatenate(ts_l), np.concatenate(w_l))
    return Loaded(inter, np.concatenate(ev_l), profile_pks)


def model_params() -> ModelParams:
    return ModelParams(**settings.RECS_MODEL_PARAMS)


@contextmanager
def _stage(version: ModelVersion, name: str, status: str, on_progress: Progress | None) -> Iterator[None]:
    version.status = status
    version.save(update_fields=["status"])
    started = time.monotonic()
    if on_progress:
        on_progress(name, 0, 1)
    yield
    version.stage_seconds = {**version.stage_seconds, name: round(time.monotonic() - started, 2)}
    version.save(update_fields=["stage_seconds"])
    if on_progress:
        on_progress(name, 1, 1)


def _folder(version: ModelVersion) -> str:
    return f"recs/{version.project_id}/{version.pk}"


def _reset(version: ModelVersion) -> None:
    """Forget what an interrupted attempt of this version wrote."""
    RelatedProduct.objects.filter(model_version=version).delete()
    TrendingProduct.objects.filter(model_version=version).delete()
    version.stage_seconds = {}
    version.metrics = {}
    version.error = ""


def _write_related(version: ModelVersion, cat: Catalog, rows: np.ndarray, idx: np.ndarray, probs: np.ndarray) -> int:
    """The lists as RelatedProduct rows, ROW_CHUNK rows per COPY (one transaction each).

    The COPY text is built by pandas' CSV writer from the arrays: the
    generic crm.bulk.copy_rows formats value by value in Python, which took ~100 s
    of the 2,000,000 rows of a 100,000-product store."""
    pids = np.asarray(cat.product_ids, dtype=object)
    columns = ["project_id", "model_version_id", "product_id", "related_product_id", "rank", "score"]
    written = 0
    step = ROW_CHUNK // RELATED_K
    for start in range(0, len(rows), step):
        items, nbrs, ps = rows[start : start + step], idx[start : start + step], probs[start : start + step]
        ok = nbrs >= 0
        frame = pd.DataFrame({
            "project_id": version.project_id,
            "model_version_id": version.pk,
            "product_id": pids[np.repeat(items, nbrs.shape[1]).reshape(nbrs.shape)[ok]],
            "related_product_id": pids[nbrs[ok]],
            "rank": np.tile(np.arange(1, nbrs.shape[1] + 1), (len(items), 1))[ok],
            "score": ps[ok].astype(np.float64),
        })  # fmt: skip
        buffer = io.StringIO()
        frame.to_csv(buffer, header=False, index=False)
        buffer.seek(0)
        table = connection.ops.quote_name(RelatedProduct._meta.db_table)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
        written += len(frame)
    return written


def _write_trending(version: ModelVersion, cat: Catalog, scores: np.ndarray) -> int:
    rows = trending_rows(scores=scores, product_ids=cat.product_ids, categories=cat.categories,
                         allowed=np.asarray(cat.active, dtype=bool))  # fmt: skip
    return copy_rows(
        TrendingProduct,
        ["project_id", "model_version_id", "category", "product_id", "rank", "score"],
        [(version.project_id, version.pk, *row) for row in rows],
    )


def _save_artifacts(
    version: ModelVersion, *, model: CorrelationModel, cat: Catalog, vocab: FeatureVocab, known: np.ndarray,
    idx: np.ndarray, probs: np.ndarray, trending: np.ndarray, trending_at: float, profile_pks: np.ndarray,
    popularity: np.ndarray,
) -> None:  # fmt: skip
    folder = _folder(version)
    _replace(f"{folder}/model.weights.npz", _npz(weights_state(model)))
    meta = {
        "product_ids": cat.product_ids, "words": vocab.words, "categories": vocab.categories,
        "price_edges": vocab.price_edges, "params": model.params.as_dict(), "n_users": len(profile_pks),
        "trending_at": trending_at,
    }  # fmt: skip
    _replace(f"{folder}/meta.json", json.dumps(meta).encode())
    # profile_pks: the user rows of the model (matrix factorisation's user vectors).
    # popularity: users per product in training, the debiasing's n_j (online updates reuse it).
    arrays = {"related_idx": idx, "related_score": probs, "known": known, "trending": trending,
              "profile_pks": profile_pks, "popularity": popularity}  # fmt: skip
    _replace(f"{folder}/arrays.npz", _npz(arrays))


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _replace(path: str, payload: bytes) -> None:
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(payload))


def _fail(version: ModelVersion, exc: BaseException) -> ModelVersion:
    log.exception("training run of version %s failed", version.pk)
    RelatedProduct.objects.filter(model_version=version).delete()
    TrendingProduct.objects.filter(model_version=version).delete()
    version.status = VersionStatus.FAILED
    version.error = f"{type(exc).__name__}: {exc}"[:5000]
    version.finished_at = timezone.now()
    version.save(update_fields=["status", "error", "finished_at"])
    return version


def run_full(*, version_id: int, on_progress: Progress | None = None) -> ModelVersion:
    """Run every stage of a full training for a version created by
    services.modelversion_start. A version already finished is left as it is (a
    redelivered task does nothing); an unfinished one starts over."""
    version = ModelVersion.objects.get(pk=version_id)
    if version.status not in services.RUNNING:
        return version
    _reset(version)
    version.artifact_path = _folder(version)
    version.params = {"model": model_params().as_dict(), "min_events": settings.RECS_MIN_TRAINING_EVENTS,
                      "serve_recent": settings.RECS_SERVE_RECENT, "serve_decay": settings.RECS_SERVE_DECAY}  # fmt: skip
    version.save()
    try:
        _run_full(version, on_progress)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the active version serving
        return _fail(version, exc)
    return services.modelversion_finish(version_id=version.pk)


def _run_full(version: ModelVersion, on_progress: Progress | None) -> None:
    def sub(stage: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: on_progress(stage, done, total)) if on_progress else None

    with _stage(version, "collect", VersionStatus.COLLECTING, on_progress):
        now = timezone.now()
        since = training_window(project_id=version.project_id, min_events=settings.RECS_MIN_TRAINING_EVENTS, now=now)
        collected = collect_interactions(
            project_id=version.project_id, folder=_folder(version), since=since, until=now, on_progress=sub("collect")
        )
        version.data_from, version.data_to = since, now
        version.last_event_id = collected.last_event_id
        version.save(update_fields=["data_from", "data_to", "last_event_id"])

    with _stage(version, "load", VersionStatus.TRAINING, on_progress):
        cat = catalog_load(project_id=version.project_id)
        loaded = interactions_load(collected.paths, cat)
        seqs = dedupe_last(loaded.inter, n_items=cat.n)
        if version.data_from is None and len(loaded.inter):
            version.data_from = datetime.fromtimestamp(float(loaded.inter.ts.min()), tz=now.tzinfo)
        version.interactions, version.users, version.products = len(loaded.inter), len(loaded.profile_pks), cat.n
        version.save(update_fields=["interactions", "users", "products", "data_from"])
        split = holdout_split(seqs, max_eval_users=settings.RECS_EVAL_USERS, seed=version.pk)
        # The model first learns from the validation split's training part (neither the
        # test items nor the validation items), beta is tuned on the validation items,
        # then one warm pass adds the validation items back (refit_params) before the
        # served lists are made; the test items are never seen until the figure.
        validation = validation_split(split)
        feats, vocab = build_features(cat.infos)

    with _stage(version, "train", VersionStatus.TRAINING, on_progress):
        params = model_params()
        result = train_model(seqs=validation.train, n_items=cat.n, n_users=len(loaded.profile_pks), feats=feats,
                             params=params, on_progress=sub("train"))  # fmt: skip
        version.params = {**version.params, "examples": result.examples, "loss": result.epochs_loss}

    with _stage(version, "tune", VersionStatus.TRAINING, on_progress):
        allowed = np.asarray(cat.active, dtype=bool)
        popularity = np.bincount(validation.train.items, minlength=cat.n).astype(np.float64)  # users per product
        ctx, tgt, bias = item_vectors(result.model, popularity > 0)
        # Only the lists the validation users' recent items need (the full lists come
        # from the refitted model below).
        rows = np.unique(recent_items(validation.train, validation.eval_users, settings.RECS_SERVE_RECENT))
        rows = rows[rows >= 0]
        cand_idx = np.full((cat.n, RERANK_CANDIDATES), -1, np.int32)
        cand_p = np.zeros((cat.n, RERANK_CANDIDATES), np.float32)
        cand_idx[rows], cand_p[rows] = related_top_k(ctx=ctx, tgt=tgt, bias=bias, rows=rows, allowed=allowed,
                                                     k=RERANK_CANDIDATES, cosine=params.context == "user")  # fmt: skip
        choice = debias_tune(validation=validation, idx=cand_idx, probs=cand_p, popularity=popularity,
                             betas=settings.RECS_DEBIAS_BETAS, tolerance_se=settings.RECS_DEBIAS_TOLERANCE_SE,
                             k=RELATED_K, allowed=allowed, recent=settings.RECS_SERVE_RECENT,
                             decay=settings.RECS_SERVE_DECAY)  # fmt: skip
        del cand_idx, cand_p
        version.params = {**version.params, "debias": {**choice.as_dict(), "tuned_lists": len(rows)}}
        refit = train_model(seqs=split.train, n_items=cat.n, n_users=len(loaded.profile_pks), feats=feats,
                            params=refit_params(params), init_from=weights_state(result.model))  # fmt: skip
        version.params = {**version.params, "refit": {"examples": refit.examples, "loss": refit.epochs_loss}}
        result = refit

    with _stage(version, "related", VersionStatus.TRAINING, on_progress):
        popularity = np.bincount(split.train.items, minlength=cat.n).astype(np.float64)  # users per product
        known = popularity > 0
        ctx, tgt, bias = item_vectors(result.model, known)
        cand_idx, cand_p = related_top_k(ctx=ctx, tgt=tgt, bias=bias, allowed=allowed, k=RERANK_CANDIDATES,
                                         cosine=params.context == "user", on_progress=sub("related"))  # fmt: skip
        idx, probs = debias_rerank(idx=cand_idx, probs=cand_p, popularity=popularity, beta=choice.beta, k=RELATED_K)
        del cand_idx, cand_p
        _write_related(version, cat, np.arange(cat.n), idx, probs)

    with _stage(version, "evaluate", VersionStatus.EVALUATING, on_progress):
        evaluation = evaluate_split(split=split, n_items=cat.n, nbr_idx=idx, nbr_score=probs, vectors=tgt,
                                    allowed=allowed, recent=settings.RECS_SERVE_RECENT,
                                    decay=settings.RECS_SERVE_DECAY)  # fmt: skip
        version.metrics = evaluation.as_dict()
        version.save(update_fields=["metrics", "params"])

    with _stage(version, "trending", VersionStatus.EVALUATING, on_progress):
        half_life = settings.RECS_TRENDING_HALF_LIFE_DAYS
        now_s = now.timestamp()
        scores = decayed_scores(items=loaded.inter.items, ts=loaded.inter.ts, weights=loaded.inter.weights,
                                n_items=cat.n, now=now_s, half_life_days=half_life)  # fmt: skip
        _write_trending(version, cat, scores)
        _save_artifacts(version, model=result.model, cat=cat, vocab=vocab, known=known, idx=idx, probs=probs,
                        trending=scores, trending_at=now_s, profile_pks=loaded.profile_pks,
                        popularity=popularity)  # fmt: skip


# --- Online updates -------------------------------------------------------------------


def run_online(*, version_id: int, on_progress: Progress | None = None) -> ModelVersion:
    """Update the parent (active) version with what happened since it was trained:
    new interactions and new or changed products. Starts from the parent's weights,
    trains one pass over the histories of the users active since, recomputes the
    related products of every product those touched (and of new products: cold
    start from side features), copies the parent's other lists, and ages the
    parent's trending scores by the time elapsed before adding the new interactions.
    """
    version = ModelVersion.objects.select_related("parent").get(pk=version_id)
    if version.status not in services.RUNNING:
        return version
    _reset(version)
    version.artifact_path = _folder(version)
    version.save()
    try:
        _run_online(version, on_progress)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the active version serving
        return _fail(version, exc)
    return services.modelversion_finish(version_id=version.pk)


def _load_parent(parent: ModelVersion) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    with default_storage.open(f"{parent.artifact_path}/meta.json", "rb") as fh:
        meta = json.loads(fh.read())
    loaded = []
    for name in ("arrays.npz", "model.weights.npz"):
        with default_storage.open(f"{parent.artifact_path}/{name}", "rb") as fh:
            loaded.append(dict(np.load(io.BytesIO(fh.read()))))
    return meta, loaded[0], loaded[1]


def _run_online(version: ModelVersion, on_progress: Progress | None) -> None:
    parent = version.parent
    if parent is None or not parent.artifact_path:
        raise ValueError("an online update needs a parent version with artifacts")
    with _stage(version, "collect", VersionStatus.COLLECTING, on_progress):
        now = timezone.now()
        # Users with new interactions, then their histories (index event_profile_time_names).
        active_profiles = list(
            Event.objects.filter(
                project_id=version.project_id,
                pk__gt=parent.last_event_id,
                name__in=list(interaction_kinds(project_id=version.project_id)),
            )
            .values_list("profile_id", flat=True)
            .distinct()
        )
        collected = collect_interactions(
            project_id=version.project_id, folder=_folder(version), since=parent.data_from, until=now,
            profiles=active_profiles if active_profiles else [-1],
        )  # fmt: skip
        version.data_from, version.data_to = parent.data_from, now
        version.last_event_id = max(collected.last_event_id, parent.last_event_id)
        version.save(update_fields=["data_from", "data_to", "last_event_id"])

    with _stage(version, "train", VersionStatus.TRAINING, on_progress):
        meta, arrays, weights = _load_parent(parent)
        parent_ids: list[str] = meta["product_ids"]
        cat = catalog_load(project_id=version.project_id, first_ids=parent_ids)
        loaded = interactions_load(collected.paths, cat)
        seqs = dedupe_last(loaded.inter, n_items=cat.n)
        parent_vocab = FeatureVocab(meta["words"], meta["categories"], meta["price_edges"])
        feats, vocab = build_features(cat.infos, vocab=parent_vocab)
        params = ModelParams(**{**meta["params"], "epochs": 1})
        # Users keep the parent's rows (their vectors are in its weights); new ones are appended.
        profile_pks = _profile_rows(arrays["profile_pks"], loaded.profile_pks)
        seqs.users = profile_pks.rows[seqs.users]
        result = train_model(seqs=seqs, n_items=cat.n, n_users=len(profile_pks.all), feats=feats, params=params,
                             init_from=weights)  # fmt: skip
        new_mask = loaded.event_ids > parent.last_event_id
        version.interactions = int(new_mask.sum())
        version.users, version.products = len(active_profiles), cat.n
        version.params = {**parent.params, "online": {"examples": result.examples, "history_rows": len(loaded.inter)}}
        version.save(update_fields=["interactions", "users", "products", "params"])

    with _stage(version, "related", VersionStatus.TRAINING, on_progress):
        n_old = len(parent_ids)
        known = np.zeros(cat.n, dtype=bool)
        known[:n_old] = arrays["known"]
        known[seqs.items] = True
        changed_since = parent.created_at
        affected = set(np.unique(loaded.inter.items[new_mask]).tolist()) | set(range(n_old, cat.n))
        affected |= {i for i, t in enumerate(cat.updated_at) if t is not None and t >= changed_since}
        rows = np.array(sorted(affected), dtype=np.int64)
        ctx, tgt, bias = item_vectors(result.model, known)
        # The parent's beta, on its popularity plus the new interactions' (user, product)
        # pairs (a user who had the product before counts twice: an approximation the
        # nightly run corrects). Parents from before debiasing have beta 0.
        beta = float(parent.params.get("debias", {}).get("beta", 0.0))
        popularity = np.zeros(cat.n)
        popularity[:n_old] = arrays.get("popularity", np.zeros(n_old))
        new_pairs = np.unique(loaded.inter.users[new_mask].astype(np.int64) * cat.n + loaded.inter.items[new_mask])
        popularity += np.bincount((new_pairs % cat.n).astype(np.int64), minlength=cat.n)
        cand_idx, cand_p = related_top_k(ctx=ctx, tgt=tgt, bias=bias, rows=rows, allowed=np.asarray(cat.active, bool),
                                         k=RERANK_CANDIDATES, cosine=params.context == "user")  # fmt: skip
        idx, probs = debias_rerank(idx=cand_idx, probs=cand_p, popularity=popularity, beta=beta, k=RELATED_K)
        _copy_parent_related(version, parent, [cat.product_ids[i] for i in rows])
        _write_related(version, cat, rows, idx, probs)
        all_idx = np.full((cat.n, RELATED_K), -1, np.int32)
        all_probs = np.zeros((cat.n, RELATED_K), np.float32)
        all_idx[:n_old], all_probs[:n_old] = arrays["related_idx"], arrays["related_score"]
        all_idx[rows], all_probs[rows] = idx, probs

    with _stage(version, "trending", VersionStatus.EVALUATING, on_progress):
        half_life = settings.RECS_TRENDING_HALF_LIFE_DAYS
        now_s = now.timestamp()
        scores = np.zeros(cat.n)
        scores[:n_old] = age_scores(arrays["trending"], elapsed_seconds=now_s - meta["trending_at"],
                                    half_life_days=half_life)  # fmt: skip
        scores += decayed_scores(items=loaded.inter.items[new_mask], ts=loaded.inter.ts[new_mask],
                                 weights=loaded.inter.weights[new_mask], n_items=cat.n, now=now_s,
                                 half_life_days=half_life)  # fmt: skip
        _write_trending(version, cat, scores)
        # Not re-evaluated: the metrics are the parent's, marked as inherited.
        version.metrics = {**parent.metrics, "inherited_from": parent.pk, "refreshed_products": len(rows)}
        version.save(update_fields=["metrics"])
        _save_artifacts(version, model=result.model, cat=cat, vocab=vocab, known=known, idx=all_idx,
                        probs=all_probs, trending=scores, trending_at=now_s,
                        profile_pks=profile_pks.all, popularity=popularity)  # fmt: skip


@dataclass
class _ProfileRows:
    all: np.ndarray  # row -> profile pk, the parent's rows first
    rows: np.ndarray  # the model row of each loaded user index


def _profile_rows(parent_pks: np.ndarray, loaded_pks: np.ndarray) -> _ProfileRows:
    order = np.argsort(parent_pks)
    ordered = parent_pks[order]
    pos = np.searchsorted(ordered, loaded_pks)
    pos_c = np.minimum(pos, max(len(ordered) - 1, 0))
    found = (pos < len(ordered)) & (ordered[pos_c] == loaded_pks) if len(ordered) else np.zeros(len(loaded_pks), bool)
    new = ~found
    row_of = np.where(found, order[pos_c] if len(order) else 0, len(parent_pks) + np.cumsum(new) - 1)
    return _ProfileRows(all=np.concatenate([parent_pks, loaded_pks[new]]), rows=row_of.astype(np.int64))


def _copy_parent_related(version: ModelVersion, parent: ModelVersion, skip: list[str]) -> None:
    """The parent's lists of every product not recomputed, copied in SQL."""
    table = RelatedProduct._meta.db_table
    cols = "project_id, model_version_id, product_id, related_product_id, rank, score"
    select = f"project_id, %s, product_id, related_product_id, rank, score"  # noqa: F541
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({cols}) SELECT {select} FROM {table} "
            "WHERE model_version_id = %s AND NOT (product_id = ANY(%s))",
            [version.pk, parent.pk, skip],
        )
