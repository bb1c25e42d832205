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
