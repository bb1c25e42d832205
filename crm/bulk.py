"""Fast bulk loading of rows: COPY on PostgreSQL, bulk_create elsewhere.

COPY FROM STDIN is several times faster than multi-row INSERT for large loads
(measured by bench/demo_data.py, see docs/benchmarks.md). Callers pass plain
tuples in `columns` order; values are Python objects (dict/list become JSON).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import orjson
from django.db import connection, models, transaction


def json_param(rows: Any) -> str:
    """Rows as ONE query parameter, a JSON array for `jsonb_array_elements(%s::jsonb)`:
    the set-based writers of crm.services pass their rows this way instead of
    adapting a parameter per value (~50-150 µs per row of Python on the 2-core
    benchmark host, more than the database's: docs/benchmarks.md, "Bulk import")."""
    return orjson.dumps(rows).decode()


def _copy_value(value: Any) -> str:
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dict, list)):
        text = orjson.dumps(value).decode()
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    else:
        text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def copy_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Load rows into `model`'s table, in one transaction. Returns the row count.

    `columns` are database column names (e.g. "project_id"). On databases other
    than PostgreSQL this falls back to bulk_create in chunks of 1,000.
    """
    if connection.vendor != "postgresql":
        return _bulk_create_rows(model, columns, rows)
    buffer = io.StringIO()
    count = 0
    for row in rows:
        buffer.write("\t".join(_copy_value(v) for v in row))
        buffer.write("\n")
        count += 1
    buffer.seek(0)
    table = connection.ops.quote_name(model._meta.db_table)
    column_sql = ", ".join(connection.ops.quote_name(c) for c in columns)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.cursor.copy_expert(f"COPY {table} ({column_sql}) FROM STDIN", buffer)
    return count


def _bulk_create_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    attnames = {f.column: f.attname for f in model._meta.concrete_fields}
    names = [attnames[c] for c in columns]
    objs = [model(**dict(zip(names, row, strict=True))) for row in rows]
    with transaction.atomic():
        model.objects.bulk_create(objs, batch_size=1000)
    return len(objs)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _sql_value(value: Any, adapt_datetimes: bool) -> Any:
    """A Python value as a query parameter of a raw statement: JSON as text (the
    column's type turns it back into JSON), datetimes as the backend stores them
    (psycopg2 takes them as they are: `adapt_datetimes` is False there). Called
    per value of every bulk row, so the backend is looked up once per statement
    by the caller, and the common types return at the first test."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict or kind is list:
        return orjson.dumps(value).decode()
    if adapt_datetimes and isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    return value


def _insert_values(
    model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str
) -> list[tuple]:
    """`INSERT INTO table (columns) VALUES ... <suffix>` over rows, in as few
    statements as the backend's parameter limit allows; returns fetched rows."""
    table = connection.ops.quote_name(model._meta.db_table)
    column_sql = ", ".join(connection.ops.quote_name(c) for c in columns)
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # SQLite caps the parameters of one statement; PostgreSQL takes 1,000 rows at once.
    per_statement = max(1, min(1000, (connection.features.max_query_params or 65_535) // len(columns)))
    returning = "RETURNING" in suffix
    adapt = connection.vendor != "postgresql"
    fetched: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({column_sql}) VALUES {', '.join([placeholder] * len(chunk))} {suffix}",
                [_sql_value(v, adapt) for row in chunk for v in row],
            )
            if returning:
                fetched.extend(cursor.fetchall())
    return fetched


def insert_new_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    unique_columns: Sequence[str],
    returning: str,
) -> list[Any]:
    """INSERT rows, skipping those that collide with an existing row on
    `unique_columns` (or with an earlier row of the same call), and return the
    `returning` column of the rows actually inserted.

    Unlike `bulk_create(ignore_conflicts=True)` this tells the caller which rows
    are new, which is what makes redelivered queue messages safe: side effects
    are applied only for rows this call inserted. The conflict check is done by
    the unique index inside the INSERT, so two concurrent callers never both
    see a row as new. Runs in the caller's transaction; PostgreSQL and SQLite
    (3.35+) both support `ON CONFLICT DO NOTHING RETURNING`.
    """
    if not rows:
        return []
    qn = connection.ops.quote_name
    conflict = ", ".join(qn(c) for c in unique_columns)
    fetched = _insert_values(model, columns, rows, f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {qn(returning)}")
    return [r[0] for r in fetched]


def upsert_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    unique_columns: Sequence[str],
    set_sql: str,
    where_sql: str = "",
) -> None:
    """INSERT rows; a row colliding on `unique_columns` updates the existing one
    with `set_sql` (SQL over `excluded.<column>` and the table's own columns),
    only where `where_sql` holds. One statement per 1,000 rows and no read
    first; the same SQL runs on PostgreSQL and SQLite. Rows must not repeat a
    key within one call (PostgreSQL refuses to update a row twice)."""
    if not rows:
        return
    conflict = ", ".join(connection.ops.quote_name(c) for c in unique_columns)
    where = f" WHERE {where_sql}" if where_sql else ""
    _insert_values(model, columns, rows, f"ON CONFLICT ({conflict}) DO UPDATE SET {set_sql}{where}")


def update_rows(model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Set `columns` of many rows in one statement; each row is `(pk, *values)`.

    PostgreSQL gets `UPDATE ... FROM (VALUES ...)`: one statement for any number
    of rows, where Django's `bulk_update` builds a CASE per column whose cost
    grows with rows x rows. Elsewhere this falls back to `bulk_update`.
    Runs in the caller's transaction; returns the number of rows given.
    """
    if not rows:
        return 0
    fields = {f.column: f for f in model._meta.concrete_fields}
    if connection.vendor != "postgresql":
        attnames = [fields[c].attname for c in columns]
        objs = [model(pk=row[0], **dict(zip(attnames, row[1:], strict=True))) for row in rows]
        model.objects.bulk_update(objs, attnames, batch_size=500)
        return len(objs)
    from psycopg2.extras import execute_values

    qn = connection.ops.quote_name
    pk_column = qn(model._meta.pk.column)
    names = [f"v{i}" for i in range(len(columns))]
    set_sql = ", ".join(
        f"{qn(c)} = v.{n}::{fields[c].db_type(connection)}" for c, n in zip(columns, names, strict=True)
    )
    sql = (
        f"UPDATE {qn(model._meta.db_table)} AS t SET {set_sql} "
        f"FROM (VALUES %s) AS v(pk, {', '.join(names)}) WHERE t.{pk_column} = v.pk"
    )
    with connection.cursor() as cursor:
        execute_values(cursor, sql, [[_sql_value(v, False) for v in row] for row in rows], page_size=1000)
    return len(rows)
