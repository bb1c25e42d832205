"""Product writes: the bulk upsert by (project, product_id) that the import and
the demo generator use (COPY, through a TEMP stage for existing products), the
console's activate/deactivate, and the catalog token bump of the import's
parallel writers."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from catalog.csvfile import FIELDS, ProductIn
from catalog.models import Product
from catalog.selectors import category_cache_key
from crm.bulk import copy_text

ALL_FIELDS = frozenset(FIELDS)
# The columns of a COPY line (catalog_product's, and its TEMP staging table's).
_COPY_COLUMNS = [
    "project_id", "product_id", "name", "categories", "price", "currency", "rating", "description",
    "image_url", "deeplink", "in_stock", "is_active", "properties", "created_at", "updated_at",
    "last_upload_id", "last_upload_row",
]  # fmt: skip
# Fields a file may leave out; on update, only the columns the file has are written.
_OPTIONAL = ("name", "categories", "price", "currency", "rating", "description", "image_url", "deeplink", "in_stock")


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    # (product, the row of this upload that already wrote its product id)
    duplicates: list[tuple[ProductIn, int | None]] = field(default_factory=list)


def products_upsert(
    *,
    project_id: int,
    products: Sequence[ProductIn],
    fields: Collection[str] = ALL_FIELDS,
    property_keys: Collection[str] | None = None,
    upload_id: int | None = None,
    lines: Sequence[str] | None = None,
    assume_new: bool = False,
) -> UpsertResult:
    """Create or update `products` by (project, product_id).

    - `fields`: the known columns the source has; an existing product keeps its
      values for the others (a file of ids and prices only updates prices).
      A product in the source is active unless the source says otherwise.
    - `property_keys`: the property columns the source has; those keys are
      replaced (an empty cell removes one), other keys are kept. None replaces
      the whole properties object.
    - `upload_id`: marks the products as written by this upload (replace mode
      deactivates the rest). A product already written by an earlier chunk of the
      same upload is not written again but returned in `duplicates`, as is a
      repeated id within `products`.
    - `lines`: the products as COPY lines (product_copy_line_factory, same order),
      when the caller built them already; the import does so in its parse thread.
    - `assume_new`: first try to COPY them all straight in as new products; on a
      unique violation, upsert them through the stage. The import sets it while
      no chunk so far met an existing product, as in a first upload.

    Call inside a transaction for atomicity with other writes; it uses the
    connection's TEMP staging table (_STAGE_DDL) for existing products.
    """
    result = UpsertResult()
    unique: list[ProductIn] = []
    unique_lines: list[str] | None = None if lines is None else []
    first_row: dict[str, int | None] = {}
    for index, product in enumerate(products):
        if product.product_id in first_row:
            result.duplicates.append((product, first_row[product.product_id]))
        else:
            first_row[product.product_id] = product.row
            unique.append(product)
            if unique_lines is not None:
                unique_lines.append(lines[index])  # type: ignore[index]
    if not unique:
        return result
    update_fields = [f for f in _OPTIONAL if f in fields]
    cache.delete(category_cache_key(project_id))  # the console's category filter
    if unique_lines is None:
        copy_line = product_copy_line_factory(project_id=project_id, upload_id=upload_id)
        unique_lines = [copy_line(p) for p in unique]
    if assume_new and _copy_all_new(unique_lines):
        result.created += len(unique)
    else:
        _upsert_staged(project_id, unique, unique_lines, update_fields, property_keys, upload_id, result)
    return result


def product_copy_line_factory(*, project_id: int, upload_id: int | None) -> Callable[[ProductIn], str]:
    """A function turning a ProductIn into one COPY line of _COPY_COLUMNS.

    crm.bulk.copy_rows formats any value through an isinstance chain; here the
    types are known, and the import calls this in its parse thread, so the
    formatting overlaps PostgreSQL's work instead of adding to it. In a profile
    of a 100k-row import, formatting on the writer's side took about a fifth.
    """
    now = timezone.now().isoformat()
    head = f"{project_id}\t"
    tail = f"\t{now}\t{now}\t{upload_id if upload_id is not None else NULL}\t"
    dumps = orjson.dumps
    esc = copy_text

    def line(p: ProductIn) -> str:
        price, rating = p.price, p.rating
        return (
            head
            + "\t".join(
                (
                    esc(p.product_id),
                    esc(p.name),
                    dumps(list(p.categories)).decode().replace("\\", "\\\\"),
                    NULL if price is None else str(price),
                    esc(p.currency),
                    NULL if rating is None else repr(rating),
                    esc(p.description),
                    esc(p.image_url),
                    esc(p.deeplink),
                    "t" if p.in_stock else "f",
                    "t" if p.is_active else "f",
                    dumps(p.properties or {}).decode().replace("\\", "\\\\"),
                )
            )
            + tail
            + (NULL if p.row is None else str(p.row))
        )

    return line


NULL = "\\N"

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS catalog_product_stage (
    project_id bigint, product_id varchar(255), name varchar(500), categories jsonb,
    price numeric(14, 4), currency varchar(3), rating double precision, description text,
    image_url varchar(2048), deeplink varchar(2048), in_stock boolean, is_active boolean,
    properties jsonb, created_at timestamptz, updated_at timestamptz, last_upload_id bigint,
    last_upload_row bigint
) ON COMMIT DELETE ROWS
"""


def _copy_in(cursor: Any, table: str, lines: Sequence[str]) -> None:
    data = "\n".join(lines) + "\n"
    # One read of the whole chunk: psycopg2 takes the GIL back for every read, and
    # the parse thread holds it meanwhile (a chunk is ~1.5 MB: ~200 reads of 8 KiB).
    with connection.wrap_database_errors:  # psycopg2's errors as Django's (IntegrityError)
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(_COPY_COLUMNS)}) FROM STDIN", io.StringIO(data), size=len(data) + 1
        )


def _copy_all_new(lines: list[str]) -> bool:
    """COPY every line straight into catalog_product, in a savepoint; False (and
    nothing written) when one of them exists already.

    Measured on 100k new rows (2 cores, other work running): COPY into the table
    took 1.5 s where COPY into the stage plus INSERT ... SELECT ... ON CONFLICT
    took 1.8 to 2.6 s. A first upload is all new rows; once a chunk meets
    existing products the import stops trying (a failed COPY is wasted work).
    Probing for existing ids first to split each chunk was slower still on
    re-uploads (one index lookup per id, then the same ones again in the upsert).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _copy_in(cursor, "catalog_product", lines)
    except IntegrityError:
        return False
    return True


def _upsert_staged(
    project_id: int,
    products: list[ProductIn],
    lines: list[str],
    update_fields: list[str],
    property_keys: Collection[str] | None,
    upload_id: int | None,
    result: UpsertResult,
) -> None:
    """COPY into the connection's TEMP stage, then one INSERT ... ON CONFLICT DO
    UPDATE from it: new products inserted, existing ones updated, in one statement."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        cursor.execute("TRUNCATE catalog_product_stage")
        _copy_in(cursor, "catalog_product_stage", lines)
        sets = [f"{f} = EXCLUDED.{f}" for f in update_fields]
        params: list[Any] = []
        if property_keys is None:
            sets.append("properties = EXCLUDED.properties")
        elif property_keys:
            # jsonb - text[] drops the file's keys, || adds the file's values.
            sets.append("properties = (p.properties - %s::text[]) || EXCLUDED.properties")
            params.append(list(property_keys))
        sets += [
            "is_active = EXCLUDED.is_active",
            "updated_at = EXCLUDED.updated_at",
            "last_upload_id = EXCLUDED.last_upload_id",
            "last_upload_row = EXCLUDED.last_upload_row",
        ]
        # Already written by this upload (a concurrent writer, or a race with the
        # probe): leave it, and the row is reported as a duplicate. A product only
        # "touched" for a rejected row (last_upload_row NULL) may still be written.
        where = ""
        if upload_id is not None:
            where = "WHERE p.last_upload_id IS DISTINCT FROM EXCLUDED.last_upload_id OR p.last_upload_row IS NULL"
        columns = ", ".join(_COPY_COLUMNS)
        cursor.execute(
            f"""
            INSERT INTO catalog_product AS p ({columns})
            SELECT {columns} FROM catalog_product_stage
            ON CONFLICT (project_id, product_id) DO UPDATE SET {", ".join(sets)}
            {where}
            RETURNING p.product_id, (p.xmax = 0)
            """,
            params,
        )
        # xmax is 0 on a freshly inserted row version and the updating transaction's
        # id on an updated one: the usual way to tell the two apart in RETURNING.
        written = dict(cursor.fetchall())
    result.created += sum(1 for inserted in written.values() if inserted)
    result.updated += sum(1 for inserted in written.values() if not inserted)
    skipped = [p for p in products if p.product_id not in written]
    if skipped:
        rows = dict(
            Product.objects.filter(project_id=project_id, product_id__in=[p.product_id for p in skipped]).values_list(
                "product_id", "last_upload_row"
            )
        )
        result.duplicates.extend((p, rows.get(p.product_id)) for p in skipped)


def catalog_state_bump(*, project_id: int) -> None:
    """Give the project's catalog a new token (catalog.models.CatalogState).

    Triggers do this after every statement that writes products; call it only
    in a transaction that set `engage.catalog_state_deferred`, as the import's
    parallel writers do: they commit in file order, and a trigger's row lock
    taken by a later chunk would make an earlier chunk, whose commit the later
    one waits for, wait for that lock in turn.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO catalog_catalogstate (project_id, token) VALUES (%s, nextval('catalog_state_token_seq')) "
            "ON CONFLICT (project_id) DO UPDATE SET token = EXCLUDED.token",
            [project_id],
        )


def products_set_active(*, project_id: int, product_pks: Collection[int], active: bool) -> int:
    """The console's activate/deactivate actions."""
    return Product.objects.filter(project_id=project_id, pk__in=list(product_pks)).update(
        is_active=active, updated_at=timezone.now()
    )
