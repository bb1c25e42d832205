"""The ingest pipeline: normalised messages (ingestion.spec) into the data store.

Used by the `ingest` workers (one call per project per queue message) and by
`import_events` (one call per chunk of the file). Everything is written through
crm.services, in bulk.

Exactly once: a chunk's events and every side effect they cause (profile
traits, recent items, devices) are written in ONE transaction, and the side
effects are applied only for the events that transaction inserted. A worker
killed mid-batch leaves whole chunks committed or not at all; the broker
redelivers the message, the committed chunks' events are found already stored
and cause nothing twice, and the rest are stored.
"""

from __future__ import annotations

import gzip
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from crm.models import Project
from crm.selectors import project_for_write_key
from crm.services import (
    BULK_CHUNK,
    DeviceIn,
    EventIn,
    IdentityIn,
    ProfileActivity,
    devices_upsert,
    events_insert_new,
    platform_from,
    profiles_apply_activity,
    profiles_resolve,
)
from ingestion import hooks
from ingestion.models import CanonicalEvent, DeadLetter
from ingestion.selectors import event_name_mappings
from ingestion.spec import MAX_MESSAGE_BYTES, MessageError, message_normalize, parse_time

logger = logging.getLogger(__name__)

# Errors that say nothing about the message: the database is unreachable,
# restarting, or chose this transaction as a deadlock victim. The task retries.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)

_VIEW_EVENTS = {CanonicalEvent.PRODUCT_VIEWED.value, CanonicalEvent.PRODUCT_ADDED.value}
_PURCHASE_EVENT = CanonicalEvent.ORDER_COMPLETED.value
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
    """Store normalised messages of one project: events, identities, traits,
    recent items and devices, in transactions of `chunk_size` messages.

    A chunk that fails on its data is retried message by message, and a message
    that still fails is put in the dead-letter table with its error, so one bad
    message neither blocks the queue nor holds back its neighbours. Transient
    database errors propagate (the caller retries the whole call; what was
    committed is then skipped as duplicate). A project deleted meanwhile drops
    its messages with a log line.
    """
    result = StoreResult()
    if not messages:
        return result
    if not _project_exists(project_id):
        logger.warning("dropping %d messages of deleted project %s", len(messages), project_id)
        return result
    mappings = event_name_mappings(project_id=project_id)
    for start in range(0, len(messages), chunk_size):
        chunk = messages[start : start + chunk_size]
        try:
            result.add(_chunk_store(project_id=project_id, messages=chunk, mappings=mappings))
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - find the message(s) at fault below
            logger.info("chunk of %d messages failed; retrying one by one", len(chunk), exc_info=True)
            for message in chunk:
                result.add(_message_store_or_dead_letter(project_id=project_id, message=message, mappings=mappings))
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


def _message_store_or_dead_letter(*, project_id: int, message: dict[str, Any], mappings: dict[str, str]) -> StoreResult:
    try:
        return _chunk_store(project_id=project_id, messages=[message], mappings=mappings)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - any error of this message's data
        dead_letter_record(project_id=project_id, message=message, error=exc)
        return StoreResult(dead_lettered=1)


def dead_letter_record(*, project_id: int, message: dict[str, Any], error: BaseException) -> DeadLetter:
    """Set a message aside with its error (visible in the console)."""
    logger.warning("dead letter in project %s: %r", project_id, error)
    received = message.get("receivedAt")
    # Keep what the database can keep: a NUL character (a common reason to be
    # here) is stored as the six characters "\u0000" instead.
    text = orjson.dumps(message)
    if b"\\u0000" in text:
        message = orjson.loads(text.replace(b"\\u0000", b"\\\\u0000"))
    return DeadLetter.objects.create(
        project_id=project_id,
        message_id=str(message.get("messageId") or "").replace("\x00", "\\u0000")[:255],
        message=message,
        error=f"{type(error).__name__}: {error}".replace("\x00", "\\u0000")[:10_000],
        traceback="".join(traceback.format_exception(error)).replace("\x00", "\\u0000")[-20_000:],
        received_at=datetime.fromisoformat(received) if isinstance(received, str) else timezone.now(),
    )


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
    if name in _VIEW_EVENTS:
        product = _product_id(properties.get("product_id"))
        return ([product] if product else []), []
    if name == _PURCHASE_EVENT:
        products = properties.get("products")
        if not isinstance(products, list):
            return [], []
        ids = [_product_id(p.get("product_id")) for p in products if isinstance(p, dict)]
        return [], [p for p in ids if p]
    return [], []


def _device(context: dict[str, Any], profile_id: int, seen_at: datetime) -> DeviceIn | None:
    device = context.get("device")
    if not isinstance(device, dict):
        return None
    device_id = device.get("id")
    if device_id in (None, "") or isinstance(device_id, dict | list):
        return None
    os_info = context.get("os") if isinstance(context.get("os"), dict) else {}
    app = context.get("app") if isinstance(context.get("app"), dict) else {}
    return DeviceIn(
        profile_id=profile_id,
        device_id=str(device_id)[:255],
        platform=platform_from(str(device.get("type") or os_info.get("name") or "")),
        push_token=str(device.get("token") or "")[:4096],
        app_version=str(app.get("version") or "")[:64],
        os_name=str(os_info.get("name") or "")[:64],
        os_version=str(os_info.get("version") or "")[:64],
        last_seen=seen_at,
    )


def _chunk_store(*, project_id: int, messages: Sequence[dict[str, Any]], mappings: dict[str, str]) -> StoreResult:
    """One transaction: resolve profiles, insert the new events, then apply the
    new events' side effects (see the module docstring)."""
    timestamps = [datetime.fromisoformat(m["timestamp"]) for m in messages]
    with transaction.atomic():
        profile_ids = profiles_resolve(
            project_id=project_id,
            identities=[
                IdentityIn(
                    user_id=m.get("userId"),
                    anonymous_id=m.get("anonymousId"),
                    previous_id=m.get("previousId"),
                    seen_at=ts,
                )
                for m, ts in zip(messages, timestamps, strict=True)
            ],
        )
        events = [
            EventIn(
                profile_id=pid,
                name=m["event"],
                timestamp=ts,
                message_id=m["messageId"],
                type=m["type"],
                properties=_properties(m),
                context=m.get("context") or {},
                received_at=datetime.fromisoformat(m["receivedAt"]),
            )
            for m, ts, pid in zip(messages, timestamps, profile_ids, strict=True)
        ]
        new_ids = events_insert_new(project_id=project_id, events=events)

        activities: dict[int, ProfileActivity] = {}
        devices: list[DeviceIn] = []
        # Oldest first, so the newest product ends up first in the recent lists.
        for event in sorted(_first_new(events, new_ids), key=lambda e: e.timestamp):
            activity = activities.get(event.profile_id)
            if activity is None:
                activity = activities[event.profile_id] = ProfileActivity()
            activity.seen(event.timestamp)
            if event.type == "identify" and event.properties:
                activity.traits.append(event.properties)
            elif event.type == "track":
                viewed, purchased = _products_of(mappings.get(event.name, event.name), event.properties)
                activity.viewed.extend(viewed)
                activity.purchased.extend(purchased)
            context = event.context
            if context:
                if isinstance(context.get("locale"), str):
                    activity.locale = context["locale"]
                if isinstance(context.get("timezone"), str):
                    activity.timezone = context["timezone"]
                device = _device(context, event.profile_id, event.timestamp)
                if device is not None:
                    devices.append(device)
        if devices:
            devices_upsert(project_id=project_id, devices=devices)
        hooks.events_stored(
            project_id,
            [
                hooks.StoredEvent(
                    profile_id=e.profile_id,
                    type=e.type,
                    name=mappings.get(e.name, e.name),
                    properties=e.properties,
                    timestamp=e.timestamp,
                    message_id=e.message_id,
                )
                for e in _first_new(events, new_ids)
            ],
        )
        # Last before the commit: it locks the profile rows, and a concurrent
        # worker touching the same profiles waits for this transaction to end.
        profiles_apply_activity(project_id=project_id, activities=activities)
    return StoreResult(stored=len(new_ids), duplicates=len(messages) - len(new_ids))


def _first_new(events: Sequence[EventIn], new_ids: set[str]) -> Iterator[EventIn]:
    """The events this transaction inserted, each message id once."""
    pending = set(new_ids)
    for event in events:
        if event.message_id in pending:
            pending.discard(event.message_id)
            yield event


def dead_letters_retry(*, dead_letter_ids: Sequence[int]) -> StoreResult:
    """Process dead letters again (after the cause was fixed) and delete them.
    A message that fails again gets a new dead letter with its new error; on a
    transient database error nothing is deleted."""
    result = StoreResult()
    letters = list(DeadLetter.objects.filter(pk__in=dead_letter_ids).order_by("pk"))
    by_project: dict[int, list[dict[str, Any]]] = {}
    for letter in letters:
        by_project.setdefault(letter.project_id, []).append(letter.message)
    for project_id, messages in by_project.items():
        mappings = event_name_mappings(project_id=project_id)
        for message in messages:
            result.add(_message_store_or_dead_letter(project_id=project_id, message=message, mappings=mappings))
    DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]).delete()
    return result


# --- Bulk import ------------------------------------------------------------------


# Messages per transaction of import_events. Larger than the workers' chunks:
# a history has many events per user, and each chunk costs one profile update
# per user in it: 50,000 imported 11% faster than 10,000 (docs/benchmarks.md,
# "Bulk import"); the import process peaks at ~750 MB (one chunk parsed, one stored).
IMPORT_CHUNK = 50_000


@dataclass(frozen=True)
class ImportLineRejected:
    line: int
    field: str
    message: str


@dataclass
class ImportResult:
    lines: int = 0
    rejected: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    rejected_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rejected_lines"] = out["rejected_lines"][:100]
        out["events_per_s"] = round(self.stored / self.seconds, 1) if self.seconds else 0.0
        return out


def _open_lines(raw: IO[bytes]) -> IO[bytes]:
    """The file's lines, gunzipped when it starts with the gzip magic bytes."""
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw


# Lines are read in blocks of this size and split in C: iterating a GzipFile
# line by line costs a Python call per line.
_READ_BLOCK = 1 << 20


def _line_blocks(raw: IO[bytes]) -> Iterator[list[bytes]]:
    """The file's lines (without their newline), a block's worth at a time."""
    lines = _open_lines(raw)
    rest = b""
    while block := lines.read(_READ_BLOCK):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield parts
    if rest:
        yield [rest]


def events_import(
    *,
    path: Path,
    project_id: int | None = None,
    chunk: int = IMPORT_CHUNK,
    on_progress: Callable[[int], Any] | None = None,
    on_rejected: Callable[[ImportLineRejected], Any] | None = None,
    set_based: bool | None = None,
) -> ImportResult:
    """Import newline-delimited JSON messages (gzip too) into the store.

    Each line is validated exactly as the collectors validate a message
    (ingestion.spec) and stored with the effects of the ingest workers'
    pipeline (messages_store), in transactions of `chunk` messages: a history
    of many events per user costs one profile update per user per chunk, not
    one per event. The project is `project_id`, or each line's `writeKey`. A
    line's own `receivedAt` (exports carry it) is the reference of its
    clock-skew correction; otherwise the import time is. Rejected lines are
    reported through `on_rejected` with their line numbers and skipped;
    `on_progress` gets the bytes read since its last call. Re-running a file
    stores nothing twice (message ids; a line without one gets an id derived
    from its content).

    On PostgreSQL the chunks are stored set-based by ingestion.backfill, on a
    writer thread with its own connection while the next chunk is parsed
    (inline when called inside a transaction, whose rows that connection could
    not see). Elsewhere (SQLite), or with `set_based=False`, each chunk goes
    through messages_store.
    """
    # Imports ingestion.services itself: imported here, not at the top.
    from ingestion.backfill import ChunkWriter

    result = ImportResult()
    started = time.perf_counter()
    now = timezone.now()
    now_text = now.isoformat()
    pending: dict[int, list[dict[str, Any]]] = {}
    if set_based is None:
        set_based = connection.vendor == "postgresql"
    writer = ChunkWriter(threaded=set_based and not connection.in_atomic_block) if set_based else None

    def reject(line: int, error: MessageError) -> None:
        result.rejected += 1
        if len(result.rejected_lines) < 10_000:
            result.rejected_lines.append(line)
        if on_rejected:
            on_rejected(ImportLineRejected(line=line, field=error.field, message=error.error))

    def flush(pid: int) -> None:
        messages = pending.pop(pid)
        if writer is not None:
            writer.put(project_id=pid, messages=messages)
            return
        stored = messages_store(project_id=pid, messages=messages, chunk_size=chunk)
        result.stored += stored.stored
        result.duplicates += stored.duplicates
        result.dead_lettered += stored.dead_lettered

    with path.open("rb") as raw, writer or nullcontext():
        position = 0
        number = 0
        for block in _line_blocks(raw):
            if on_progress:
                now_position = raw.tell()
                on_progress(now_position - position)
                position = now_position
            for line in block:
                number += 1
                line = line.strip()
                if not line:
                    continue
                try:
                    if len(line) > MAX_MESSAGE_BYTES:
                        raise MessageError("message", f"message is larger than {MAX_MESSAGE_BYTES // 1024} KB")
                    try:
                        message = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise MessageError("line", "malformed JSON") from None
                    if not isinstance(message, dict):
                        raise MessageError("line", "each line must be a JSON object")
                    pid = project_id
                    if pid is None:
                        key = message.get("writeKey")
                        project = project_for_write_key(key) if isinstance(key, str) else None
                        if project is None:
                            raise MessageError("writeKey", "unknown or missing writeKey (or pass --project)")
                        pid = project.pk
                    received_at = parse_time(message.get("receivedAt"), "receivedAt")
                    normalized = message_normalize(
                        message,
                        project_id=pid,
                        received_at=received_at or now,
                        check_size=False,
                        received_at_text=None if received_at else now_text,
                    )
                except MessageError as exc:
                    reject(number, exc)
                    continue
                batch = pending.get(pid)
                if batch is None:
                    batch = pending[pid] = []
                batch.append(normalized)
                if len(batch) >= chunk:
                    flush(pid)
        result.lines = number
        for pid in list(pending):
            flush(pid)
        if writer is not None:
            stored = writer.close()
            result.stored, result.duplicates, result.dead_lettered = (
                stored.stored,
                stored.duplicates,
                stored.dead_lettered,
            )
        if on_progress:
            on_progress(raw.tell() - position)
    result.seconds = round(time.perf_counter() - started, 3)
    return result
