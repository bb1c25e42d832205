"""Bulk writes of rows: COPY for loads, multi-row INSERT ... ON CONFLICT for
rows that may exist, and one JSON parameter for the set-based statements.

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


def copy_text(value: str) -> str:
    """A text value in COPY's text format: backslash, tab and line breaks escaped
    (a NUL is left to fail the row). The check first: most values have none."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


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
    return copy_text(text)


def copy_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Load rows into `model`'s table, in one transaction. Returns the row count.

    `columns` are database column names (e.g. "project_id").
    """
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


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _sql_value(value: Any) -> Any:
    """A Python value as a query parameter of a raw statement: JSON as text (the
    column's type turns it back into JSON), anything else as psycopg2 adapts it.
    Called per value of every bulk row: the common types return at the first test."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict or kind is list:
        return orjson.dumps(value).decode()
    return value


def _insert_values(
    model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str
) -> list[tuple]:
    """`INSERT INTO table (columns) VALUES ... <suffix>` over rows, in as few
    statements as the backend's parameter limit allows; returns fetched rows."""
    table = connection.ops.quote_name(model._meta.db_table)
    column_sql = ", ".join(connection.ops.quote_name(c) for c in columns)
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # 1,000 rows per statement, within PostgreSQL's 65,535 parameters.
    per_statement = max(1, min(1000, 65_535 // len(columns)))
    returning = "RETURNING" in suffix
    fetched: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({column_sql}) VALUES {', '.join([placeholder] * len(chunk))} {suffix}",
                [_sql_value(v) for row in chunk for v in row],
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
    see a row as new. Runs in the caller's transaction.
    """
    if not rows:
        return []
    qn = connection.ops.quote_name
    conflict = ", ".join(qn(c) for c in unique_columns)
    fetched = _insert_values(model, columns, rows, f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {qn(returning)}")
    return [r[0] for r in fetched]
