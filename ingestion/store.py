"""The one write path of ingestion: normalised messages (ingestion.spec) into the
data store, set-based, in chunks of one transaction each.

Everything that stores messages goes through `chunk_store`: the ingest workers'
batches (ingestion.tasks, through `messages_store` in chunks of BULK_CHUNK),
`import_events` (ingestion.importer, chunks of IMPORT_CHUNK parsed in a second process)
and the dead letters processed again (`dead_letters_retry`). Everything is
written through crm.services.

Exactly once: a chunk's events and every side effect they cause (profile
traits, recent items, first/last seen, devices, the stored-events hooks) are
written in ONE transaction, and the side effects are applied only for the
events that transaction inserted. A worker killed mid-batch leaves whole chunks
committed or not at all; the broker redelivers the message, the committed
chunks' events are found already stored and cause nothing twice, and the rest
are stored.

Set-based, because the Python work per message was more than the database's
(docs/benchmarks.md, "Bulk import"):
- Each distinct identity of a chunk goes to `profiles_resolve` once, not each
  message (a history has many events per user; see `_identities`).
- The chunk's events go to PostgreSQL as ONE parameter, a JSON array, and one
  `INSERT ... SELECT FROM jsonb_array_elements(...) ON CONFLICT DO NOTHING
  RETURNING message_id`: no per-row parameter adaptation in Python, and the
  unique (project, message_id) index still decides which events are new.
- Side effects are aggregated per profile and per device before any object is
  built (one DeviceIn per device, not per event).

A chunk that fails on its data is stored again through the same path in smaller
chunks (BULK_CHUNK messages, then one message at a time), and a message that
still fails alone is put in the dead-letter table with its error, so one bad
message neither blocks the queue nor holds back its neighbours. Transient
database errors propagate (the caller retries; what was committed is then
skipped as duplicate).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from crm.models import Project
from crm.selectors import event_name_mappings
from crm.services import (
    DeviceIn,
    IdentityIn,
    ProfileActivity,
    ProfilesGone,
    devices_upsert,
    events_insert_new,
    platform_from,
    profiles_apply_activity,
    profiles_resolve,
    write_caches_clear,
)
from crm.storable import text_storable
from crm.vocabulary import ORDER_EVENTS, RECENT_VIEW_EVENTS, canonical_name
from ingestion import hooks
from ingestion.models import DeadLetter

logger = logging.getLogger(__name__)

# Errors that say nothing about the message: the database is unreachable,
# restarting, or chose this transaction as a deadlock victim. The task retries.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

# Messages per transaction of the ingest workers, and the size a failed larger
# chunk is stored again in before going message by message.
BULK_CHUNK = 1000
# Chunks larger than this get a bigger work_mem for their statements.
LARGE_CHUNK = 2000

_MAX_PRODUCT_ID = 255


@dataclass
class StoreResult:
    stored: int = 0  # events this call inserted
    duplicates: int = 0  # messages whose id the project had stored already
    dead_lettered: int = 0

    def add(self, other: StoreResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered


def messages_store(*, project_id: int, messages: Sequence[dict[str, Any]], chunk_size: int = BULK_CHUNK) -> StoreResult:
    """Store normalised messages of one project with `chunk_store`, in chunks
    (transactions) of `chunk_size` messages."""
    result = StoreResult()
    for start in range(0, len(messages), chunk_size):
        result.add(chunk_store(project_id=project_id, messages=messages[start : start + chunk_size]))
    return result


def chunk_store(*, project_id: int, messages: Sequence[dict[str, Any]]) -> StoreResult:
    """Store one chunk of normalised messages of a project in one transaction:
    identities, events, then for the events it inserted only: devices, the
    stored-events hooks, traits, recent items, locale and first/last seen.

    A chunk that fails on its data is stored again in smaller chunks, down to
    one message, and a message that fails alone is dead-lettered (see the module
    docstring). Transient database errors propagate. A project deleted
    meanwhile drops its messages with a log line."""
    if not messages:
        return StoreResult()
    if not _project_exists(project_id):
        logger.warning("dropping %d messages of deleted project %s", len(messages), project_id)
        return StoreResult()
    return _chunk_store_or_split(
        project_id=project_id, messages=messages, mappings=event_name_mappings(project_id=project_id)
    )


def _chunk_store_or_split(
    *, project_id: int, messages: Sequence[dict[str, Any]], mappings: dict[str, str]
) -> StoreResult:
    try:
        try:
            return _chunk_store(project_id=project_id, messages=messages, mappings=mappings)
        except ProfilesGone:
            # A remembered identity whose profile was merged away (or a merge
            # racing this chunk): forget, roll back and resolve again.
            # (With this project's memory cleared, everything is looked up.)
            write_caches_clear(project_id)
            return _chunk_store(project_id=project_id, messages=messages, mappings=mappings)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - any error of the chunk's data: find the message(s) at fault
        if len(messages) == 1:
            letter = dead_letter_record(project_id=project_id, message=messages[0], error=exc)
            return StoreResult(dead_lettered=1 if letter is not None else 0)
        # A big import chunk is first split into the workers' chunk size: one
        # bad message then costs BULK_CHUNK single transactions, not 50,000.
        step = BULK_CHUNK if len(messages) > BULK_CHUNK else 1
        logger.info("chunk of %d messages failed; storing it in chunks of %d", len(messages), step, exc_info=True)
        result = StoreResult()
        for start in range(0, len(messages), step):
            result.add(
                _chunk_store_or_split(project_id=project_id, messages=messages[start : start + step], mappings=mappings)
            )
        return result


# Projects seen to exist, and until when that is trusted: saves a query per
# batch. A project deleted meanwhile fails its inserts (foreign key) and its
# messages end up dropped with an error in the log instead of a warning.
_PROJECT_EXISTS_SECONDS = 60.0
_projects_seen: dict[int, float] = {}


def _project_exists(project_id: int) -> bool:
    now = time.monotonic()
    if _projects_seen.get(project_id, 0.0) > now:
        return True
    if Project.objects.filter(pk=project_id).exists():
        _projects_seen[project_id] = now + _PROJECT_EXISTS_SECONDS
        return True
    return False


def _chunk_store(*, project_id: int, messages: Sequence[dict[str, Any]], mappings: dict[str, str]) -> StoreResult:
    with transaction.atomic():
        # The statements read their JSON parameter into a tuplestore: past
        # work_mem (4 MB by default, ~7,000 events) it spills to a temp file.
        # (Not for the workers' small batches: a round trip for nothing.)
        if len(messages) > LARGE_CHUNK:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '256MB'")
        profile_ids = profiles_resolve(project_id=project_id, identities=_identities(messages), cached=True)
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
        new_ids = events_insert_new(project_id=project_id, rows=rows)
        # The first row of each inserted message id, in message order.
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
                        name=canonical_name(rows[i][2], mappings),
                        properties=rows[i][3],
                        timestamp=datetime.fromisoformat(rows[i][5]),
                        message_id=rows[i][7],
                    )
                    for i in new_rows
                ],
            )
        # Last before the commit: it locks the profile rows, and a concurrent
        # worker touching the same profiles waits for this transaction to end.
        profiles_apply_activity(project_id=project_id, activities=activities)
    return StoreResult(stored=len(new_ids), duplicates=len(messages) - len(new_ids))


def _identities(messages: Sequence[dict[str, Any]]) -> list[IdentityIn]:
    """Each message's identity. A repeated (userId, anonymousId) pair gets its
    first occurrence's object: profiles_resolve resolves each pair once, dated
    by its first occurrence, so later ones need no object of their own."""
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


def _properties(message: dict[str, Any]) -> dict[str, Any]:
    """What the event row keeps besides its name: properties, or the traits of
    identify/group, or the ids of group/alias."""
    kind = message["type"]
    if kind == "identify":
        return message.get("traits") or {}
    if kind == "group":
        return {"groupId": message["groupId"], "traits": message.get("traits") or {}}
    if kind == "alias":
        return {"previousId": message["previousId"]}
    properties = message.get("properties") or {}
    if kind == "page" and "category" in message and "category" not in properties:
        properties = {**properties, "category": message["category"]}
    return properties


def _product_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text[:_MAX_PRODUCT_ID] if text else None


def _products_of(name: str, properties: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(viewed, purchased) product ids of an e-commerce event (canonical name)."""
    if name in RECENT_VIEW_EVENTS:
        product = _product_id(properties.get("product_id"))
        return ([product] if product else []), []
    if name in ORDER_EVENTS:
        products = properties.get("products")
        if not isinstance(products, list):
            return [], []
        ids = [_product_id(p.get("product_id")) for p in products if isinstance(p, dict)]
        return [], [p for p in ids if p]
    return [], []


def _activities_apply_devices(
    *, project_id: int, rows: list[list[Any]], new_rows: list[int], mappings: dict[str, str]
) -> dict[int, ProfileActivity]:
    """Upsert the devices of the new events and return each profile's activity.

    Events oldest first (a stable sort, so messages of the same time keep their
    order): the newest product ends up first in the recent lists, the latest
    locale and device win. Timestamps are compared as the ISO-8601 text of UTC
    times (message_normalize writes them all with +00:00), which orders them as
    the times do."""
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
            viewed, purchased = _products_of(canonical_name(name, mappings), properties)
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
                    # A device takes its latest event, and an event without a
                    # push token keeps the token seen before it.
                    key = str(device_id)[:255]
                    last_event_of_device[key] = i
                    token = str(device.get("token") or "")[:4096]
                    if token:
                        token_of_device[key] = token
    for pid, activity in activities.items():
        activity.first_seen = datetime.fromisoformat(first_seen[pid])
        activity.last_seen = datetime.fromisoformat(last_seen[pid])
    if last_event_of_device:
        devices_upsert(
            project_id=project_id,
            devices=[
                _device(
                    rows[i][4],
                    device_id=key,
                    profile_id=rows[i][0],
                    push_token=token_of_device.get(key, ""),
                    seen_at=datetime.fromisoformat(rows[i][5]),
                )
                for key, i in last_event_of_device.items()
            ],
        )
    return activities


def _device(
    context: dict[str, Any], *, device_id: str, profile_id: int, push_token: str, seen_at: datetime
) -> DeviceIn:
    """The device of an event's context (Segment's context.device, .os, .app)."""
    device = context["device"]
    os_info = context.get("os") if isinstance(context.get("os"), dict) else {}
    app = context.get("app") if isinstance(context.get("app"), dict) else {}
    return DeviceIn(
        profile_id=profile_id,
        device_id=device_id,
        platform=platform_from(str(device.get("type") or os_info.get("name") or "")),
        push_token=push_token,
        app_version=str(app.get("version") or "")[:64],
        os_name=str(os_info.get("name") or "")[:64],
        os_version=str(os_info.get("version") or "")[:64],
        last_seen=seen_at,
    )


# --- Dead letters ------------------------------------------------------------------


def dead_letter_record(*, project_id: int, message: dict[str, Any], error: BaseException) -> DeadLetter | None:
    """Set a message aside with its error (visible in the console).

    Cannot fail on the message's content: the message is kept as JSON text and
    every text column gets only what PostgreSQL's text can hold (no NUL, no
    lone surrogate). None when the project was deleted meanwhile (its messages
    are dropped, as chunk_store drops them): one project's messages must not
    stop the rest of the worker's batch."""
    logger.warning("dead letter in project %s: %r", project_id, error)
    fields = message if isinstance(message, dict) else {}
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction, if any, goes on
            return DeadLetter.objects.create(
                project_id=project_id,
                message_id=text_storable(str(fields.get("messageId") or ""))[:255],
                message=_letter_json(message),
                error=text_storable(f"{type(error).__name__}: {error}")[:10_000],
                traceback=text_storable("".join(traceback.format_exception(error)))[-20_000:],
                received_at=_letter_received_at(fields.get("receivedAt")),
            )
    except IntegrityError:
        if Project.objects.filter(pk=project_id).exists():
            raise
        logger.warning("dropping a dead letter of deleted project %s", project_id)
        return None


def _letter_json(message: Any) -> str:
    """The message as JSON text: exact, and always storable as text (JSON
    escapes every control character, NUL included)."""
    try:
        return orjson.dumps(message).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    # Not what orjson.loads makes (every queue and file path reads messages
    # with it): the standard library keeps more (integers past 64 bits, lone
    # surrogates as escapes, anything else as its repr).
    try:
        return json.dumps(message, ensure_ascii=True, default=repr)
    except (RecursionError, TypeError, ValueError) as exc:
        return orjson.dumps({"unencodable_message": text_storable(f"{type(exc).__name__}: {exc}")}).decode()


def _letter_received_at(value: Any) -> datetime:
    """The message's receivedAt as a datetime, or now when it has none usable."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    return timezone.now()


def dead_letters_retry(*, dead_letter_ids: Sequence[int]) -> StoreResult:
    """Process dead letters again (after the cause was fixed) through
    `messages_store`, and delete them. A message that fails again gets a new
    dead letter with its new error; on a transient database error nothing is
    deleted."""
    result = StoreResult()
    letters = list(DeadLetter.objects.filter(pk__in=dead_letter_ids).order_by("pk"))
    by_project: dict[int, list[dict[str, Any]]] = {}
    done: list[int] = []
    for letter in letters:
        try:
            message = orjson.loads(letter.message)
        except orjson.JSONDecodeError as exc:
            message = exc
        if not isinstance(message, dict):
            # Not a message (edited by hand?): kept, saying why.
            letter.error = f"the stored message is not a JSON object: {message}"[:10_000]
            letter.save(update_fields=["error"])
            result.dead_lettered += 1
            continue
        by_project.setdefault(letter.project_id, []).append(message)
        done.append(letter.pk)
    for project_id, messages in by_project.items():
        result.add(messages_store(project_id=project_id, messages=messages))
    DeadLetter.objects.filter(pk__in=done).delete()
    return result
