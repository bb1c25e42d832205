"""Real-time serving: a user's next recommendations, similar products, trending.

One request costs, once the process is warm, one small query: the profile's
recent items together with the project's active model version and its catalog
token (catalog.models.CatalogState). Everything else comes from per-process
memory, and nothing there can be stale:
- related-product and trending lists of a version are immutable, so they are
  cached keyed by version: activation of a new version is seen on the next
  request;
- catalog rows are cached keyed by the catalog token, which database triggers
  change in the same transaction as any product write. A different token empties
  the project's rows, so the catalog *as it is now* decides (a product that went
  out of stock a moment ago is not served). Filters on the cached rows are
  applied here in Python, with the database's semantics; property filters
  (JSON containment) still go to the database.

Order of what is served, each tier sorted by (score desc, product id) so the
answer is deterministic:
1. related products of the user's recent items (newest weighted most);
2. trending in the requested categories (or, with none requested, in the
   categories of the user's recent items);
3. overall trending;
4. the rest of the catalog passing the filters (best rated first), so a request
   returns `limit` products whenever the catalog has that many.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import connection
from django.db.models import F

from catalog.models import Product
from catalog.selectors import product_filter
from recommendations.models import RelatedProduct, TrendingProduct

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeFilters:
    categories: tuple[str, ...] = ()
    in_stock: bool | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    # name -> the values the property may equal (see catalog.selectors.property_filter_values)
    properties: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    exclude: frozenset[str] = frozenset()


class ServedProduct(NamedTuple):
    """One product of an answer. A NamedTuple: ten are built per request, and a
    frozen dataclass costs several times more to build."""

    product_id: str
    name: str
    image_url: str
    deeplink: str
    price: float | None
    rating: float | None
    score: float
    because_of: str | None
    reason: str  # related | trending_category | trending | catalog

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "image_url": self.image_url,
            "deeplink": self.deeplink,
            "price": self.price,
            "rating": self.rating,
            "score": self.score,
            "because_of": self.because_of,
            "reason": self.reason,
        }


@dataclass
class Served:
    recommendation_id: str
    products: list[ServedProduct]
    profile_id: int | None = None
    model_version_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"recommendation_id": self.recommendation_id, "products": [p.as_dict() for p in self.products]}


@dataclass
class UserState:
    profile_id: int | None
    recent_viewed: list[str] = field(default_factory=list)
    recent_purchased: list[str] = field(default_factory=list)
    model_version_id: int | None = None
    # None: the project never had a product written (or the row is missing);
    # catalog rows are then read from the database.
    catalog_token: int | None = None


# --- Per-process caches of immutable per-version lists ----------------------------

_LIST_CACHE_MAX = 200_000
_lock = threading.Lock()
_related: OrderedDict[tuple[int, str], tuple[tuple[str, float], ...]] = OrderedDict()
_trending: OrderedDict[tuple[int, str], tuple[tuple[str, float], ...]] = OrderedDict()


# project id -> (catalog token, {product id: row, or None for "not in the catalog"},
# whether the whole catalog at that token is loaded: then a missing id is not in it)
_catalog: dict[int, tuple[int, dict[str, tuple | None], bool]] = {}
# Rows kept per project before the project's cache starts over (a few hundred
# bytes each): bounds memory for catalogs far larger than what is ever served.
CATALOG_CACHE_MAX = 300_000


# Whole versions of related lists, loaded once per process in the background
# (related_preload): version -> {product id: (related ids, their scores)}.
_preloaded: dict[int, dict[str, tuple[tuple[str, ...], array]]] = {}
_preload_started: set[int] = set()


def serving_cache_clear() -> None:
    with _lock:
        _related.clear()
        _trending.clear()
        _catalog.clear()
        _catalog_preload_at.clear()
        _preloaded.clear()
        _preload_started.clear()


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

    _in_background(f"related-preload-{version_id}", lambda: related_preload(version_id=version_id))


def _in_background(name: str, load: Callable[[], object]) -> None:
    """Run a preload on a daemon thread with its own database connection.
    Serving goes on from the lazy caches meanwhile, and if it fails."""

    def run() -> None:
        try:
            load()
        except Exception:  # noqa: BLE001 - logged; the lazy caches keep serving
            logger.exception("%s failed", name)
        finally:
            connection.close()  # this thread's own connection

    threading.Thread(target=run, name=name, daemon=True).start()


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
    # A server-side cursor on PostgreSQL: rows stream in batches instead of the
    # whole result waiting in the client library's memory.
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
    gc.collect()
    gc.freeze()
    return True


TRENDING_DEPTH = 200


def trending_list(*, version_id: int, category: str = "") -> tuple[tuple[str, float], ...]:
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


# --- Reads of the user and the catalog ----------------------------------------------


def _json_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return [str(v) for v in value]


_USER_STATE_SQL = (
    "SELECT (SELECT mv.id FROM recommendations_modelversion mv"
    "        WHERE mv.project_id = {project} AND mv.status = 'active'),"
    "       (SELECT cs.token FROM catalog_catalogstate cs WHERE cs.project_id = {project}),"
    "       p.id, p.recent_viewed, p.recent_purchased "
    "FROM (SELECT 1 AS one) AS x "
    "LEFT JOIN crm_profile p ON p.project_id = {project} AND p.user_id = {user}"
)


def user_state(*, project_id: int, user_id: str | None) -> UserState:
    """The profile's recent items, the project's active version and its catalog
    token, in one round trip (raw SQL: this runs on every request, and the ORM
    cannot fetch a row and unrelated scalars together). An unknown user has no
    profile.

    On PostgreSQL the statement is prepared once per connection: planning it
    cost PostgreSQL more than running it."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and settings.DB_PREPARED_STATEMENTS:
            raw = connection.connection
            # Compared by identity with a reference kept here, so a new connection
            # (after a close or a reconnect) is always prepared again.
            if getattr(connection, "_recs_user_state_prepared_on", None) is not raw:
                cursor.execute(
                    "PREPARE recs_user_state (bigint, text) AS " + _USER_STATE_SQL.format(project="$1", user="$2")
                )
                connection._recs_user_state_prepared_on = raw
            cursor.execute("EXECUTE recs_user_state (%s, %s)", [project_id, user_id or ""])
        else:
            sql = _USER_STATE_SQL.format(project="%(project)s", user="%(user)s")
            cursor.execute(sql, {"project": project_id, "user": user_id or ""})
        version_id, token, profile_id, viewed, purchased = cursor.fetchone()
    return UserState(
        profile_id=profile_id,
        recent_viewed=_json_list(viewed),
        recent_purchased=_json_list(purchased),
        model_version_id=version_id,
        catalog_token=token,
    )


def project_state(*, project_id: int) -> UserState:
    """The project's active version and catalog token (no user)."""
    return user_state(project_id=project_id, user_id=None)


_PRODUCT_FIELDS = ("product_id", "name", "image_url", "deeplink", "price", "rating", "categories")
# What the cache keeps: the served fields, then what the filters look at.
_CACHED_FIELDS = (*_PRODUCT_FIELDS, "in_stock", "is_active")


def _catalog_pass(
    *,
    project_id: int,
    filters: ServeFilters,
    candidate_ids: Iterable[str] | None,
    limit: int | None = None,
    catalog_token: int | None = None,
) -> dict[str, tuple]:
    """Catalog rows of the candidates (or of any product, best rated first, when
    `candidate_ids` is None) that pass the filters: active, and the request's
    category, stock, price and property conditions."""
    if candidate_ids is not None and catalog_token is not None and not filters.properties:
        return _catalog_pass_cached(
            project_id=project_id, token=catalog_token, filters=filters, candidate_ids=candidate_ids
        )
    if candidate_ids is not None and not filters.categories and not filters.properties:
        return _catalog_pass_by_ids(project_id=project_id, filters=filters, candidate_ids=list(candidate_ids))
    qs = product_filter(
        project_id=project_id,
        categories=filters.categories,
        in_stock=filters.in_stock,
        is_active=True,
        price_min=filters.price_min,
        price_max=filters.price_max,
        properties={name: list(values) for name, values in filters.properties},
    )
    if candidate_ids is not None:
        ids = list(candidate_ids)
        if not ids:
            return {}
        # No ORDER BY: with the model's default ordering (id) PostgreSQL may walk the
        # primary key over the whole catalog instead of probing the ids (60 ms vs 0.2 ms
        # at 100,000 products); the caller orders by score anyway.
        qs = qs.filter(product_id__in=ids).order_by()
    else:
        qs = qs.order_by(F("rating").desc(nulls_last=True), "product_id")[:limit]
    return {row[0]: row for row in qs.values_list(*_PRODUCT_FIELDS)}


def _catalog_pass_by_ids(*, project_id: int, filters: ServeFilters, candidate_ids: list[str]) -> dict[str, tuple]:
    """The common case of _catalog_pass (no category or property filter) in raw
    SQL: it runs on every request, and building the ORM query cost more than
    running it. Probes the unique (project_id, product_id) index."""
    if not candidate_ids:
        return {}
    sql = [
        f"SELECT {', '.join(_PRODUCT_FIELDS)} FROM {Product._meta.db_table} "
        f"WHERE project_id = %s AND is_active AND product_id IN ({', '.join(['%s'] * len(candidate_ids))})"
    ]
    params: list[Any] = [project_id, *candidate_ids]
    if filters.in_stock is not None:
        sql.append("AND in_stock = %s")
        params.append(filters.in_stock)
    if filters.price_min is not None:
        sql.append("AND price >= %s")
        params.append(filters.price_min)
    if filters.price_max is not None:
        sql.append("AND price <= %s")
        params.append(filters.price_max)
    with connection.cursor() as cursor:
        cursor.execute(" ".join(sql), params)
        rows = cursor.fetchall()
    # Raw cursors hand JSON back as text (Django turns psycopg2's jsonb parsing off).
    rows = [(*row[:6], orjson.loads(row[6]) if isinstance(row[6], str) else row[6]) for row in rows]
    return {row[0]: row for row in rows}


def _catalog_pass_cached(
    *, project_id: int, token: int, filters: ServeFilters, candidate_ids: Iterable[str]
) -> dict[str, tuple]:
    """_catalog_pass from this process's copy of the catalog at `token` (see the
    module docstring); the ids it has not seen yet are read in one query, unless
    the whole catalog at this token is loaded (catalog_preload)."""
    entry = _catalog.get(project_id)
    if entry is None or entry[0] != token or len(entry[1]) > CATALOG_CACHE_MAX:
        entry = (token, {}, False)
        _catalog[project_id] = entry
        if settings.RECS_SERVE_PRELOAD_MAX_ROWS > 0:
            _catalog_preload_in_background(project_id, token)
    _, rows, complete = entry
    ids = list(candidate_ids)
    if not complete:
        missing = [pid for pid in ids if pid not in rows]
        if missing:
            found = _catalog_rows(project_id=project_id, product_ids=missing)
            for pid in missing:
                rows[pid] = found.get(pid)
    out: dict[str, tuple] = {}
    for pid in ids:
        row = rows.get(pid)
        if row is not None and _passes(row, filters):
            out[pid] = row
    return out


# Products of a catalog loaded whole into each web process (~500 bytes each);
# larger catalogs stay in the lazy per-product cache.
CATALOG_PRELOAD_MAX_PRODUCTS = 500_000
# A catalog that keeps changing is not loaded again more often than this.
CATALOG_PRELOAD_INTERVAL_SECONDS = 30.0
_catalog_preload_at: dict[int, float] = {}


def _catalog_preload_in_background(project_id: int, token: int) -> None:
    now = time.monotonic()
    with _lock:
        if _catalog_preload_at.get(project_id, -1e9) > now - CATALOG_PRELOAD_INTERVAL_SECONDS:
            return
        _catalog_preload_at[project_id] = now

    _in_background(f"catalog-preload-{project_id}", lambda: catalog_preload(project_id=project_id, token=token))


def catalog_preload(*, project_id: int, token: int) -> bool:
    """Load a project's whole catalog into this process as the rows of `token`,
    so that no request waits for a catalog row. The rows are read after the
    token was, so they are at least as new as it; if the token has changed
    meanwhile, they are dropped (the new token starts its own cache). Returns
    whether the catalog was installed."""
    table = Product._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE project_id = %s", [project_id])
        if cursor.fetchone()[0] > CATALOG_PRELOAD_MAX_PRODUCTS:
            return False
    rows: dict[str, tuple] = {}
    with connection.chunked_cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(_CACHED_FIELDS)} FROM {table} WHERE project_id = %s", [project_id])
        while fetched := cursor.fetchmany(20_000):
            for raw in fetched:
                row = _cached_row(raw)
                rows[row[0]] = row
    with _lock:
        entry = _catalog.get(project_id)
        if entry is None or entry[0] != token:
            return False
        _catalog[project_id] = (token, rows, True)
    gc.collect()
    gc.freeze()  # see related_preload
    return True


def _catalog_rows(*, project_id: int, product_ids: list[str]) -> dict[str, tuple]:
    """Products by id as _CACHED_FIELDS tuples (_cached_row)."""
    sql = (
        f"SELECT {', '.join(_CACHED_FIELDS)} FROM {Product._meta.db_table} "
        f"WHERE project_id = %s AND product_id IN ({', '.join(['%s'] * len(product_ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id, *product_ids])
        fetched = cursor.fetchall()
    out = {}
    for raw in fetched:
        row = _cached_row(raw)
        out[row[0]] = row
    return out


def _cached_row(raw: Sequence[Any]) -> tuple:
    """A _CACHED_FIELDS row typed alike on PostgreSQL and SQLite (raw cursors
    skip the ORM's conversions): price a Decimal, categories a tuple, the flags
    booleans. Tuples all the way down on purpose: Python's garbage collector
    stops tracking a tuple of immutable values, so a large cache costs no time
    in its collections."""
    pid, name, image_url, deeplink, price, rating, categories, in_stock, is_active = raw
    if price is not None and not isinstance(price, Decimal):
        price = Decimal(str(price))
    if isinstance(categories, str | bytes):
        categories = orjson.loads(categories)
    categories = tuple(c for c in categories if isinstance(c, str)) if isinstance(categories, list) else ()
    return (pid, name, image_url, deeplink, price, rating, categories, bool(in_stock), bool(is_active))


def _passes(row: tuple, filters: ServeFilters) -> bool:
    """The conditions of catalog.selectors.product_filter (active, stock, price,
    categories), on a cached row. A product without a price fails a price bound,
    as NULL does in SQL."""
    if not row[8]:
        return False
    if filters.in_stock is not None and row[7] is not filters.in_stock:
        return False
    price = row[4]
    if filters.price_min is not None and (price is None or price < filters.price_min):
        return False
    if filters.price_max is not None and (price is None or price > filters.price_max):
        return False
    return not filters.categories or any(c in row[6] for c in filters.categories)


def _served(row: tuple, score: float, because_of: str | None, reason: str) -> ServedProduct:
    price = row[4]
    return ServedProduct(
        product_id=row[0],
        name=row[1],
        image_url=row[2],
        deeplink=row[3],
        price=None if price is None else float(price),
        rating=row[5],
        score=round(float(score), 6),
        because_of=because_of,
        reason=reason,
    )


def new_recommendation_id() -> str:
    return secrets.token_hex(10)


def _rank(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


class _Picker:
    """Collects products tier by tier until `limit`, never twice, never excluded."""

    def __init__(
        self, *, project_id: int, filters: ServeFilters, limit: int, skip: set[str], catalog_token: int | None
    ) -> None:
        self.project_id, self.filters, self.limit = project_id, filters, limit
        self.catalog_token = catalog_token
        self.skip = skip
        self.picked: list[ServedProduct] = []
        self.categories_seen: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.picked) >= self.limit

    def offer(self, ranked: Sequence[tuple[str, float, str | None]], reason: str) -> None:
        """`ranked`: (product_id, score, because_of), best first."""
        if self.full:
            return
        skip, picked, limit, seen = self.skip, self.picked, self.limit, self.categories_seen
        fresh = [item for item in ranked if item[0] not in skip]
        # Ask the catalog for a few more than needed: some will fail the filters.
        # From the process's cache a candidate costs nothing unless it is a miss
        # (a query), so fewer are asked for at a time there.
        need = self.limit - len(self.picked)
        window = need * 2 + 4 if self.catalog_token is not None else need * 3 + 20
        for start in range(0, len(fresh), window):
            chunk = fresh[start : start + window]
            rows = _catalog_pass(
                project_id=self.project_id,
                filters=self.filters,
                candidate_ids=[c[0] for c in chunk],
                catalog_token=self.catalog_token,
            )
            for pid, score, because in chunk:
                row = rows.get(pid)
                if row is None or pid in skip:
                    continue
                skip.add(pid)
                picked.append(_served(row, score, because, reason))
                for category in row[6] or ():
                    if category not in seen:
                        seen.append(category)
                if len(picked) >= limit:
                    return

    def fill_from_catalog(self) -> None:
        while not self.full:
            need = self.limit - len(self.picked)
            rows = _catalog_pass(
                project_id=self.project_id, filters=self.filters, candidate_ids=None, limit=need + len(self.skip)
            )
            added = 0
            for pid, row in rows.items():
                if pid in self.skip:
                    continue
                self.skip.add(pid)
                self.picked.append(_served(row, 0.0, None, "catalog"))
                added += 1
                if self.full:
                    return
            if added == 0:
                return  # the catalog has no more products passing the filters


def _trending_tiers(picker: _Picker, *, version_id: int | None, categories: Sequence[str]) -> None:
    if version_id is None or picker.full:
        return
    if categories:
        scores: dict[str, float] = {}
        for category in categories:
            for pid, score in trending_list(version_id=version_id, category=category):
                scores[pid] = max(scores.get(pid, 0.0), score)
        picker.offer([(pid, scores[pid], None) for pid in _rank(scores)], "trending_category")
    picker.offer([(pid, score, None) for pid, score in trending_list(version_id=version_id)], "trending")


def recent_sources(state: UserState) -> list[tuple[str, float]]:
    """(product id, weight) of the items the user's recommendations come from: the
    newest RECS_SERVE_RECENT views, then purchases not among them, each older
    item RECS_SERVE_DECAY times less important than the one before."""
    recent = list(dict.fromkeys([*state.recent_viewed, *state.recent_purchased]))[: settings.RECS_SERVE_RECENT]
    decay = settings.RECS_SERVE_DECAY
    return [(pid, decay**age) for age, pid in enumerate(recent)]


def excluded_for(state: UserState) -> set[str]:
    """What the user already has: the last RECS_EXCLUDE_VIEWED viewed and the last
    RECS_EXCLUDE_PURCHASED purchased products (the profile keeps ten of each)."""
    return set(state.recent_viewed[: settings.RECS_EXCLUDE_VIEWED]) | set(
        state.recent_purchased[: settings.RECS_EXCLUDE_PURCHASED]
    )


def recommendations_for_user(
    *, project_id: int, user_id: str | None, limit: int = 10, filters: ServeFilters | None = None
) -> Served:
    """The user's recommendations now. An unknown user (or one with no history)
    gets trending products; a project with no active model gets the catalog's
    best rated. Never raises for a missing profile or model."""
    filters = filters or ServeFilters()
    state = user_state(project_id=project_id, user_id=user_id)
    picker = _Picker(
        project_id=project_id,
        filters=filters,
        limit=limit,
        skip=excluded_for(state) | set(filters.exclude),
        catalog_token=state.catalog_token,
    )
    sources = recent_sources(state)
    if state.model_version_id is not None and sources:
        lists = related_lists(version_id=state.model_version_id, product_ids=[pid for pid, _ in sources])
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for source, weight in sources:
            for related, score in lists.get(source, ()):
                part = weight * score
                scores[related] = scores.get(related, 0.0) + part
                if part > best.get(related, (0.0, ""))[0]:
                    best[related] = (part, source)
        picker.offer([(pid, scores[pid], best[pid][1]) for pid in _rank(scores)], "related")
    categories = filters.categories or tuple(picker.categories_seen)
    _trending_tiers(picker, version_id=state.model_version_id, categories=categories)
    picker.fill_from_catalog()
    return Served(
        recommendation_id=new_recommendation_id(),
        products=picker.picked,
        profile_id=state.profile_id,
        model_version_id=state.model_version_id,
    )


def similar_products(
    *, project_id: int, product_id: str, limit: int = 20, filters: ServeFilters | None = None
) -> Served:
    """Products related to `product_id` (which the caller has checked exists), then
    trending in its categories, then overall trending, then the catalog."""
    filters = filters or ServeFilters()
    state = project_state(project_id=project_id)
    version_id = state.model_version_id
    picker = _Picker(
        project_id=project_id,
        filters=filters,
        limit=limit,
        skip={product_id, *filters.exclude},
        catalog_token=state.catalog_token,
    )
    if version_id is not None:
        items = related_lists(version_id=version_id, product_ids=[product_id]).get(product_id, ())
        picker.offer([(pid, score, product_id) for pid, score in items], "related")
    categories = filters.categories
    if not categories:
        own = _catalog_pass(
            project_id=project_id,
            filters=ServeFilters(),
            candidate_ids=[product_id],
            catalog_token=state.catalog_token,
        )
        categories = tuple(own[product_id][6] or ()) if product_id in own else ()
    _trending_tiers(picker, version_id=version_id, categories=categories)
    picker.fill_from_catalog()
    return Served(recommendation_id=new_recommendation_id(), products=picker.picked, model_version_id=version_id)


def trending_products_served(*, project_id: int, limit: int = 20, filters: ServeFilters | None = None) -> Served:
    filters = filters or ServeFilters()
    state = project_state(project_id=project_id)
    version_id = state.model_version_id
    picker = _Picker(
        project_id=project_id,
        filters=filters,
        limit=limit,
        skip=set(filters.exclude),
        catalog_token=state.catalog_token,
    )
    _trending_tiers(picker, version_id=version_id, categories=filters.categories)
    picker.fill_from_catalog()
    return Served(recommendation_id=new_recommendation_id(), products=picker.picked, model_version_id=version_id)
