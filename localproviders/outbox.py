"""The local provider server's writes: every accepted message goes into the
outbox through ONE writer thread per process, which commits what all request
threads handed it meanwhile as one transaction (group commit).

Why a thread: firebase-admin's send_each makes one HTTP request per message on
up to 500 threads at once, so a threaded server runs 500 handlers together. Each
handler writing itself would open its own database connection (PostgreSQL's
default max_connections is 100) and commit a transaction per push; here the
handlers open none, and 500 pushes cost a few transactions on one connection.
A handler returns its answer only once its rows are committed, so a client that
got a success finds its message in the outbox.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction

from localproviders.models import OutboxMessage

logger = logging.getLogger(__name__)

WAIT_SECONDS = 30.0
# Serialises the duplicate check of the writers of several processes (a gunicorn
# quickstart): an advisory lock on this key, held to the end of each transaction.
_ADVISORY_LOCK_KEY = 7_305_142_001


class OutboxUnavailable(Exception):
    """The rows could not be stored (database down, or the writer too slow)."""


class _Pending:
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: list[OutboxMessage]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.error: BaseException | None = None


_queue: queue.Queue[_Pending] = queue.Queue()
_writer: tuple[int, threading.Thread] | None = None
_writer_lock = threading.Lock()


def outbox_record(*, rows: list[OutboxMessage]) -> list[OutboxMessage]:
    """Store `rows` (unsaved OutboxMessage objects) and return them once committed,
    `duplicate` set on each row whose provider saw its message_key before.
    Raises OutboxUnavailable when they could not be stored within WAIT_SECONDS."""
    if not rows:
        return rows
    _writer_ensure()
    pending = _Pending(rows)
    _queue.put(pending)
    if not pending.done.wait(WAIT_SECONDS):
        raise OutboxUnavailable("the outbox writer did not commit in time")
    if pending.error is not None:
        raise OutboxUnavailable(str(pending.error)) from pending.error
    return rows


def _writer_ensure() -> None:
    global _writer
    current = _writer
    # A forked process (gunicorn workers) inherits the variable but not the thread.
    if current is not None and current[0] == os.getpid() and current[1].is_alive():
        return
    with _writer_lock:
        if _writer is None or _writer[0] != os.getpid() or not _writer[1].is_alive():
            thread = threading.Thread(target=_write_loop, name="localproviders-outbox", daemon=True)
            thread.start()
            _writer = (os.getpid(), thread)


def _write_loop() -> None:
    while True:
        batch = [_queue.get()]
        while True:
            try:
                batch.append(_queue.get_nowait())
            except queue.Empty:
                break
        try:
            _write(row for pending in batch for row in pending.rows)
        except Exception as error:  # noqa: BLE001 - handed to every waiting request
            logger.exception("local providers: outbox write failed")
            for pending in batch:
                pending.error = error
            # A broken connection is opened again for the next batch.
            connection.close()
        finally:
            for pending in batch:
                pending.done.set()


def _write(rows_iter: Iterable[OutboxMessage]) -> None:
    rows = list(rows_iter)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        _duplicates_mark(rows)
        OutboxMessage.objects.bulk_create(rows, batch_size=1000)


def _duplicates_mark(rows: list[OutboxMessage]) -> None:
    keyed: dict[str, set[str]] = {}
    for row in rows:
        if row.message_key:
            keyed.setdefault(row.provider, set()).add(row.message_key)
    seen: set[tuple[str, str]] = set()
    for provider, keys in keyed.items():
        existing = OutboxMessage.objects.filter(provider=provider, message_key__in=keys)
        seen.update((provider, key) for key in existing.values_list("message_key", flat=True).distinct())
    for row in rows:
        if not row.message_key:
            continue
        key = (row.provider, row.message_key)
        row.duplicate = key in seen
        seen.add(key)


def storable(value: Any) -> Any:
    """`value` (parsed JSON) with what jsonb and text columns refuse replaced:
    NUL characters become U+FFFD, lone surrogates "?"."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if not value.isascii():
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(str(key)): storable(item) for key, item in value.items()}
    return value
