"""Per-process lists of model versions: related products and trending.

A version's lists never change, so each web process keeps them keyed by version:
activating another version is seen on the next request. Each process loads the
active version's related lists whole in a background thread (related_preload),
and caches them per product meanwhile, or when the version is larger than
RECS_SERVE_PRELOAD_MAX_ROWS.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence

from django.conf import settings
from django.db import connection

from catalog.mirror import catalog_mirror_clear, preload_in_background
from config.process import heap_freeze
from recommendations.models import RelatedProduct, TrendingProduct

_LIST_CACHE_MAX = 200_000
_lock = threading.Lock()
_related: OrderedDict[tuple[int, str], tuple[tuple[str, float], ...]] = OrderedDict()
_trending: OrderedDict[tuple[int, str], tuple[tuple[str, float], ...]] = OrderedDict()

# Whole versions of related lists, loaded once per process in the background
# (related_preload): version -> {product id: (related ids, their scores)}.
_preloaded: dict[int, dict[str, tuple[tuple[str, ...], array]]] = {}
_preload_started: set[int] = set()

TRENDING_DEPTH = 200


def serving_cache_clear() -> None:
    """Forget everything serving keeps in this process: the lists, and the
    catalog rows (catalog.mirror)."""
    with _lock:
        _related.clear()
        _trending.clear()
        _preloaded.clear()
        _preload_started.clear()
    catalog_mirror_clear()


def _remember(cache: OrderedDict, key: tuple[int, str], value: tuple) -> None:
    with _lock:
        cache[key] = value
        if len(cache) > _LIST_CACHE_MAX:
            cache.popitem(last=False)


def related_lists(*, version_id: int, product_ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
    """The version's related lists of `product_ids` (rank order): from the
    version preloaded in this process, else from the per-product cache, with one
    query for the ones this process has not seen yet."""
    loaded = _preloaded.get(version_id)
    if loaded is not None:
        empty: tuple[tuple[str, ...], array] = ((), array("d"))
        return {pid: tuple(zip(*loaded.get(pid, empty), strict=True)) for pid in product_ids}
    if version_id not in _preload_started and settings.RECS_SERVE_PRELOAD_MAX_ROWS > 0:
        _preload_in_background(version_id)
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    missing = []
    for pid in product_ids:
        hit = _related.get((version_id, pid))
        if hit is None:
            missing.append(pid)
        else:
            out[pid] = hit
    if missing:
        rows: dict[str, list[tuple[str, float]]] = {pid: [] for pid in missing}
        # Raw SQL on the hot path: the ORM's query compilation costs more than the
        # index probe itself (index related_product_version_product_rank).
        table = RelatedProduct._meta.db_table
        marks = ", ".join(["%s"] * len(missing))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT product_id, related_product_id, score FROM {table} "
                f"WHERE model_version_id = %s AND product_id IN ({marks}) ORDER BY product_id, rank",
                [version_id, *missing],
            )
            for pid, related, score in cursor.fetchall():
                rows[pid].append((related, score))
        for pid, items in rows.items():
            out[pid] = tuple(items)
            _remember(_related, (version_id, pid), out[pid])
    return out


def _preload_in_background(version_id: int) -> None:
    with _lock:
        if version_id in _preload_started:
            return
        _preload_started.add(version_id)

    preload_in_background(name=f"related-preload-{version_id}", load=lambda: related_preload(version_id=version_id))


def related_preload(*, version_id: int) -> bool:
    """Load every related list of a version into this process, so that serving
    never waits for one (a miss cost a query). Skipped for versions of more than
    RECS_SERVE_PRELOAD_MAX_ROWS rows, whose lists stay in the per-product cache.

    Compact on purpose, as every web process holds a copy: product ids are shared
    strings, scores a packed array of doubles: ~75 MB for 100,000 products x 20. Only the
    newest preloaded version is kept. Returns whether the version was loaded.
    """
    table = RelatedProduct._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE model_version_id = %s", [version_id])
        if cursor.fetchone()[0] > settings.RECS_SERVE_PRELOAD_MAX_ROWS:
            return False
    # A server-side cursor: rows stream in batches instead of the whole result
    # waiting in the client library's memory.
    with connection.chunked_cursor() as cursor:
        cursor.execute(
            f"SELECT product_id, related_product_id, score FROM {table} "
            "WHERE model_version_id = %s ORDER BY product_id, rank",
            [version_id],
        )
        names: dict[str, str] = {}
        lists: dict[str, tuple[tuple[str, ...], array]] = {}
        source, ids, scores = None, [], array("d")
        while rows := cursor.fetchmany(20_000):
            for pid, related, score in rows:
                if pid != source:
                    if source is not None:
                        lists[source] = (tuple(ids), scores)
                    source, ids, scores = names.setdefault(pid, pid), [], array("d")
                ids.append(names.setdefault(related, related))
                scores.append(score)
        if source is not None:
            lists[source] = (tuple(ids), scores)
    with _lock:
        _preloaded.clear()
        _preloaded[version_id] = lists
        # The per-product entries of this version are not needed any more.
        for key in [k for k in _related if k[0] == version_id]:
            del _related[key]
    # Hundreds of thousands of new objects: without this, each of the garbage
    # collector's full passes would walk them all (100 ms pauses were measured,
    # the p99 of serving). Frozen objects are left out of collections for good.
    heap_freeze()
    return True


def trending_list(*, version_id: int, category: str = "") -> tuple[tuple[str, float], ...]:
    """The version's trending products, overall ("") or in one category, best
    first (TRENDING_DEPTH of them)."""
    key = (version_id, category)
    hit = _trending.get(key)
    if hit is None:
        hit = tuple(
            TrendingProduct.objects.filter(model_version_id=version_id, category=category)
            .order_by("rank")
            .values_list("product_id", "score")[:TRENDING_DEPTH]
        )
        _remember(_trending, key, hit)
    return hit
