"""The catalog as a serving process keeps it: product rows by id, per project, for
one catalog token, and the catalog filters applied to them.

A recommendation request reads the project's catalog token (CatalogState) in its
own query and passes it here. Database triggers change the token in the same
transaction as any product write, so the rows of the current token are the
catalog as it is now: a different token empties the project's rows, and a
product that went out of stock a moment ago is not served. The filters on the
rows are catalog.selectors.ProductFilter.admits, the same definition as the
database query's; property filters go to the database (rows do not carry the
properties).

Rows are plain tuples in catalog.selectors.ROW_FIELDS order, tuples of
immutable values all the way down: Python's garbage collector stops tracking
those, so a large mirror costs its collections nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.db import connection
from django.db.models import F

from catalog.models import Product
from catalog.selectors import ROW_FIELDS, ProductFilter
from config.process import heap_freeze

logger = logging.getLogger(__name__)

# project id -> (catalog token, {product id: row, or None for "not in the catalog"},
# whether the whole catalog at that token is loaded: then a missing id is not in it)
_catalog: dict[int, tuple[int, dict[str, tuple | None], bool]] = {}
_lock = threading.Lock()
# Rows kept per project before the project's rows start over (a few hundred
# bytes each): bounds memory for catalogs far larger than what is ever served.
CATALOG_CACHE_MAX = 300_000
# Products of a catalog loaded whole into each process (~500 bytes each);
# larger catalogs stay in the rows read as candidates come.
CATALOG_PRELOAD_MAX_PRODUCTS = 500_000
# A catalog that keeps changing is not loaded again more often than this.
CATALOG_PRELOAD_INTERVAL_SECONDS = 30.0
_preload_at: dict[int, float] = {}

_TABLE = Product._meta.db_table
_COLUMNS = ", ".join(ROW_FIELDS)
NO_CONDITIONS = ProductFilter()


def catalog_mirror_clear() -> None:
    with _lock:
        _catalog.clear()
        _preload_at.clear()


def preload_in_background(*, name: str, load: Callable[[], object]) -> None:
    """Run a per-process preload on a daemon thread with its own database
    connection (this one's, and recommendations' lists). Serving goes on from
    what is loaded lazily meanwhile, and if the preload fails."""

    def run() -> None:
        try:
            load()
        except Exception:  # noqa: BLE001 - logged; the lazy caches keep serving
            logger.exception("%s failed", name)
        finally:
            connection.close()  # this thread's own connection

    threading.Thread(target=run, name=name, daemon=True).start()


def products_passing(
    *, project_id: int, conditions: ProductFilter, product_ids: Sequence[str], token: int | None
) -> dict[str, tuple]:
    """The rows of the active products among `product_ids` that pass
    `conditions`. From this process's rows at `token`, reading in one query the
    ids it has not seen yet (none once the whole catalog at this token is
    loaded, catalog_preload). Without a token (no product was ever written, or
    its row is missing) the rows are read and not kept; with property conditions
    the database filters."""
    if conditions.properties:
        if not product_ids:
            return {}
        # No ORDER BY: with the model's default ordering (id) PostgreSQL may walk the
        # primary key over the whole catalog instead of probing the ids (60 ms vs 0.2 ms
        # at 100,000 products); the caller orders by score anyway.
        qs = (
            Product.objects.filter(project_id=project_id, is_active=True, product_id__in=product_ids)
            .filter(conditions.q())
            .order_by()
        )
        return {row[0]: row for row in qs.values_list(*ROW_FIELDS)}
    if token is None:
        rows: dict[str, tuple | None] = (
            _rows_read(project_id=project_id, product_ids=product_ids) if product_ids else {}
        )
    else:
        entry = _catalog.get(project_id)
        if entry is None or entry[0] != token or len(entry[1]) > CATALOG_CACHE_MAX:
            entry = (token, {}, False)
            _catalog[project_id] = entry
            # The serving setting that turns every per-process preload off (tests).
            if settings.RECS_SERVE_PRELOAD_MAX_ROWS > 0:
                _preload_in_background(project_id, token)
        _, rows, complete = entry
        if not complete:
            missing = [pid for pid in product_ids if pid not in rows]
            if missing:
                found = _rows_read(project_id=project_id, product_ids=missing)
                for pid in missing:
                    rows[pid] = found.get(pid)
    out: dict[str, tuple] = {}
    admits = conditions.admits
    for pid in product_ids:
        row = rows.get(pid)
        if row is not None and row[8] and admits(row):
            out[pid] = row
    return out


def products_best_rated(*, project_id: int, conditions: ProductFilter, limit: int) -> dict[str, tuple]:
    """The rows of the `limit` best rated active products passing `conditions`
    (unrated last, then by id), from the database: the fallback that fills a
    list when related and trending products ran out."""
    qs = (
        Product.objects.filter(project_id=project_id, is_active=True)
        .filter(conditions.q())
        .order_by(F("rating").desc(nulls_last=True), "product_id")[:limit]
    )
    return {row[0]: row for row in qs.values_list(*ROW_FIELDS)}


def _preload_in_background(project_id: int, token: int) -> None:
    now = time.monotonic()
    with _lock:
        if _preload_at.get(project_id, -1e9) > now - CATALOG_PRELOAD_INTERVAL_SECONDS:
            return
        _preload_at[project_id] = now

    preload_in_background(
        name=f"catalog-preload-{project_id}", load=lambda: catalog_preload(project_id=project_id, token=token)
    )


def catalog_preload(*, project_id: int, token: int) -> bool:
    """Load a project's whole catalog into this process as the rows of `token`,
    so that no request waits for a catalog row. The rows are read after the
    token was, so they are at least as new as it; if the token has changed
    meanwhile, they are dropped (the new token starts its own rows). Returns
    whether the catalog was installed."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {_TABLE} WHERE project_id = %s", [project_id])
        if cursor.fetchone()[0] > CATALOG_PRELOAD_MAX_PRODUCTS:
            return False
    rows: dict[str, tuple] = {}
    # A server-side cursor: rows stream in batches instead of the whole result
    # waiting in the client library's memory.
    with connection.chunked_cursor() as cursor:
        cursor.execute(f"SELECT {_COLUMNS} FROM {_TABLE} WHERE project_id = %s", [project_id])
        while fetched := cursor.fetchmany(20_000):
            for raw in fetched:
                row = _row(raw)
                rows[row[0]] = row
    with _lock:
        entry = _catalog.get(project_id)
        if entry is None or entry[0] != token:
            return False
        _catalog[project_id] = (token, rows, True)
    # Up to hundreds of thousands of new objects, left out of the garbage
    # collector's full passes for good (without, pauses of 100 ms were measured:
    # the p99 of serving, docs/benchmarks.md).
    heap_freeze()
    return True


def _rows_read(*, project_id: int, product_ids: Sequence[str]) -> dict[str, tuple]:
    """Products by id, in one query on the unique (project_id, product_id) index.
    Raw SQL: it runs for the candidates of a request, and building the ORM query
    cost more than running it."""
    marks = ", ".join(["%s"] * len(product_ids))
    sql = f"SELECT {_COLUMNS} FROM {_TABLE} WHERE project_id = %s AND product_id IN ({marks})"
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id, *product_ids])
        fetched = cursor.fetchall()
    out = {}
    for raw in fetched:
        row = _row(raw)
        out[row[0]] = row
    return out


def _row(raw: Sequence[Any]) -> tuple:
    """A ROW_FIELDS row from a raw cursor, whose JSON comes back as text (Django
    turns psycopg2's jsonb parsing off): categories become a tuple of names."""
    pid, name, image_url, deeplink, price, rating, categories, in_stock, is_active = raw
    categories = orjson.loads(categories)
    categories = tuple(c for c in categories if isinstance(c, str)) if isinstance(categories, list) else ()
    return (pid, name, image_url, deeplink, price, rating, categories, in_stock, is_active)
