"""The PostgreSQL store of `import_events`: whole chunks of a history file,
set-based, on a writer thread that overlaps with the parsing of the next chunk.

`events_import` (ingestion.services) parses and validates the file; this module
stores its chunks with the same effects as `messages_store` (same identities,
events, devices, recent items, first/last seen, stored-events hooks, in one
transaction per chunk, side effects only for events the chunk inserted), but:

- Each distinct identity of a chunk goes to `profiles_resolve` once, not each
  message (a history has many events per user; see `_identities`).
- The chunk's events go to PostgreSQL as ONE parameter, a JSON array, and one
  `INSERT ... SELECT FROM jsonb_array_elements(...) ON CONFLICT DO NOTHING
  RETURNING message_id`: no per-row parameter adaptation in Python, and the
  unique (project, message_id) index still decides which events are new.
- Side effects are aggregated per profile and per device before any object is
  built (one DeviceIn per device, not per event).
- `ChunkWriter` runs the chunks on a second thread with its own connection:
  psycopg2 releases the GIL while PostgreSQL works, so parsing (one core) and
  the database (the other) overlap.

A chunk that fails on its data is stored again by `messages_store`, which
retries it in chunks of BULK_CHUNK and dead-letters the messages at fault.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from crm.services import (
    BULK_CHUNK,
    DeviceIn,
    IdentityIn,
    ProfileActivity,
    ProfilesGone,
    devices_upsert_many,
    events_insert_new_many,
    profiles_apply_activity_many,
    profiles_resolve_many,
    write_caches_clear,
)
from ingestion import hooks
from ingestion.selectors import event_name_mappings
from ingestion.services import (
    TRANSIENT_ERRORS,
    StoreResult,
    _device,
    _products_of,
    _project_exists,
    _properties,
    messages_store,
)

logger = logging.getLogger(__name__)

# Chunks larger than this get a bigger work_mem for their statements.
LARGE_CHUNK = 2000


def backfill_chunk_store(*, project_id: int, messages: Sequence[dict[str, Any]]) -> StoreResult:
    """Store one chunk of normalised messages of a project (PostgreSQL only) in
    one transaction, with the effects `messages_store` would have for the same
    chunk. A chunk that fails on its data goes through `messages_store`
    instead (per BULK_CHUNK, then per message, with dead letters); transient
    database errors propagate."""
    if not messages:
        return StoreResult()
    if not _project_exists(project_id):
        logger.warning("dropping %d messages of deleted project %s", len(messages), project_id)
        return StoreResult()
    mappings = event_name_mappings(project_id=project_id)
    try:
        try:
            return _chunk_store_set_based(project_id=project_id, messages=messages, mappings=mappings)
        except ProfilesGone:
            # A remembered identity whose profile was merged away (or a merge
            # racing this chunk): forget, roll back and resolve again.
            # (With this project's memory cleared, everything is looked up.)
            write_caches_clear(project_id)
            return _chunk_store_set_based(project_id=project_id, messages=messages, mappings=mappings)
    except TRANSIENT_ERRORS:
        raise
    except Exception:  # noqa: BLE001 - messages_store finds the message(s) at fault
        logger.info("import chunk of %d messages failed; storing it in smaller chunks", len(messages), exc_info=True)
        return messages_store(project_id=project_id, messages=messages, chunk_size=BULK_CHUNK)


def _identities(messages: Sequence[dict[str, Any]]) -> list[IdentityIn]:
    """Each message's identity. A repeated (userId, anonymousId) pair gets its
    first occurrence's object: profiles_resolve_many resolves each pair once,
    dated by its first occurrence, so later ones need no object of their own."""
    identities: list[IdentityIn] = []
    first: dict[tuple[Any, Any], IdentityIn] = {}
    for m in messages:
        previous_id = m.get("previousId")
        key = (m.get("userId"), m.get("anonymousId"))
        identity = first.get(key) if previous_id is None else None
        if identity is None:
            identity = IdentityIn(
                user_id=key[0],
                anonymous_id=key[1],
                previous_id=previous_id,
                seen_at=datetime.fromisoformat(m["timestamp"]),
            )
            if previous_id is None:
                first[key] = identity
        identities.append(identity)
    return identities


def _chunk_store_set_based(
    *, project_id: int, messages: Sequence[dict[str, Any]], mappings: dict[str, str]
) -> StoreResult:
    with transaction.atomic():
        # The statements read their JSON parameter into a tuplestore: past
        # work_mem (4 MB by default, ~7,000 events) it spills to a temp file.
        # (Not for the workers' small batches: a round trip for nothing.)
        if len(messages) > LARGE_CHUNK:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '256MB'")
        profile_ids = profiles_resolve_many(project_id=project_id, identities=_identities(messages), cached=True)
        rows = [
            [
                pid,
                m["type"],
                m["event"],
                _properties(m),
                m.get("context") or {},
                m["timestamp"],
                m["receivedAt"],
                m["messageId"],
            ]
            for m, pid in zip(messages, profile_ids, strict=True)
        ]
        new_ids = events_insert_new_many(project_id=project_id, rows=rows)
        # The first row of each inserted message id, in file order.
        pending = set(new_ids)
        new_rows: list[int] = []
        for i, m in enumerate(messages):
            if m["messageId"] in pending:
                pending.discard(m["messageId"])
                new_rows.append(i)
        activities = _activities_apply_devices(project_id=project_id, rows=rows, new_rows=new_rows, mappings=mappings)
        # Without hooks, no StoredEvent objects (~1 µs per event for nothing).
        if new_rows and hooks.stored_hooks_active():
            hooks.events_stored(
                project_id,
                [
                    hooks.StoredEvent(
                        profile_id=rows[i][0],
                        type=rows[i][1],
                        name=mappings.get(rows[i][2], rows[i][2]),
                        properties=rows[i][3],
                        timestamp=datetime.fromisoformat(rows[i][5]),
                        message_id=rows[i][7],
                    )
                    for i in new_rows
                ],
            )
        # Last before the commit, as in _chunk_store: it locks the profile rows.
        profiles_apply_activity_many(project_id=project_id, activities=activities)
    return StoreResult(stored=len(new_ids), duplicates=len(messages) - len(new_ids))


def _activities_apply_devices(
    *, project_id: int, rows: list[list[Any]], new_rows: list[int], mappings: dict[str, str]
) -> dict[int, ProfileActivity]:
    """Upsert the devices of the new events and return each profile's activity,
    as _chunk_store computes them: events oldest first (a stable sort, so
    messages of the same time keep their file order). Timestamps are compared
    as the ISO-8601 text of UTC times (message_normalize writes them all with
    +00:00), which orders them as the times do."""
    activities: dict[int, ProfileActivity] = {}
    first_seen: dict[int, str] = {}
    last_seen: dict[int, str] = {}
    last_event_of_device: dict[str, int] = {}
    token_of_device: dict[str, str] = {}
    for i in sorted(new_rows, key=lambda i: rows[i][5]):
        pid, kind, name, properties, context, timestamp = rows[i][:6]
        activity = activities.get(pid)
        if activity is None:
            activity = activities[pid] = ProfileActivity()
            first_seen[pid] = timestamp
        last_seen[pid] = timestamp
        if kind == "identify" and properties:
            activity.traits.append(properties)
        elif kind == "track":
            viewed, purchased = _products_of(mappings.get(name, name), properties)
            if viewed:
                activity.viewed.extend(viewed)
            if purchased:
                activity.purchased.extend(purchased)
        if context:
            if isinstance(context.get("locale"), str):
                activity.locale = context["locale"]
            if isinstance(context.get("timezone"), str):
                activity.timezone = context["timezone"]
            device = context.get("device")
            if isinstance(device, dict):
                device_id = device.get("id")
                if device_id not in (None, "") and not isinstance(device_id, dict | list):
                    # devices_upsert keeps a device's latest event, and an empty
                    # push token there keeps the token seen before it.
                    key = str(device_id)[:255]
                    last_event_of_device[key] = i
                    token = str(device.get("token") or "")[:4096]
                    if token:
                        token_of_device[key] = token
    for pid, activity in activities.items():
        activity.first_seen = datetime.fromisoformat(first_seen[pid])
        activity.last_seen = datetime.fromisoformat(last_seen[pid])
    devices: list[DeviceIn] = []
    for key, i in last_event_of_device.items():
        pid, context, timestamp = rows[i][0], rows[i][4], rows[i][5]
        device = _device(context, pid, datetime.fromisoformat(timestamp))
        assert device is not None
        if not device.push_token:
            device.push_token = token_of_device.get(key, "")
        devices.append(device)
    if devices:
        devices_upsert_many(project_id=project_id, devices=devices)
    return activities


class ChunkWriter:
    """Stores chunks with `backfill_chunk_store`, on a writer thread with its
    own database connection (`threaded=True`) or in the caller's thread.

    `put` hands over a chunk and returns at once unless the writer is still
    busy with the previous one (at most one chunk waits: memory stays at two
    chunks). `close` waits for the writer and returns the totals. An error of
    the writer is raised by the next `put` or by `close`.

    Threaded mode needs the caller to be outside a transaction: the writer's
    connection cannot see the caller's uncommitted rows.
    """

    def __init__(self, *, threaded: bool) -> None:
        self.result = StoreResult()
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[int, Sequence[dict[str, Any]]] | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
            self._thread.start()

    def put(self, *, project_id: int, messages: Sequence[dict[str, Any]]) -> None:
        self._raise_error()
        if self._queue is None:
            self.result.add(backfill_chunk_store(project_id=project_id, messages=messages))
            return
        self._queue.put((project_id, messages))

    def close(self) -> StoreResult:
        """Wait for the chunks handed over, then return the totals (or raise the writer's error)."""
        self._stop()
        self._raise_error()
        return self.result

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also on an error of the caller: the writer finishes the chunk in hand
        # (each chunk is its own transaction) and its connection is closed.
        self._stop()

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            self._queue = None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        assert self._queue is not None
        try:
            while (item := self._queue.get()) is not None:
                if self._error is None:
                    try:
                        self.result.add(backfill_chunk_store(project_id=item[0], messages=item[1]))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                        self._error = exc
        finally:
            # This thread's own connection (Django opens one per thread).
            connection.close()
