"""The Segment HTTP Tracking API message format: validation and normalisation.

Shared by the collectors (one request) and `import_events` (one file line), so
both accept and reject exactly the same messages.

Hand-written checks rather than DRF serializers or a schema library: this runs
for every event on the hottest path, and a dict walk costs a few microseconds
per message where a DRF serializer costs a few hundred (see docs/benchmarks.md).

A normalised message is a small dict, put on the queue as JSON:
`type`, `messageId`, `userId`, `anonymousId`, `event` (the event row's name),
`properties`, `traits`, `context`, `timestamp` (ISO-8601, skew-corrected),
`receivedAt` and, by type, `previousId` (alias), `groupId` (group) or `category`
(page). Empty parts are left out.

What a message may hold beyond Segment's own limits (32 KB, ids of at most 255
characters), so that an accepted message can always be queued and stored:
- Times (`timestamp`, `originalTimestamp`, `sentAt`, the batch's `sentAt`, an
  imported line's `receivedAt`) are ISO-8601 strings that exist in UTC (a time
  outside years 1-9999 once converted is rejected, naming the field). The
  event's time after the clock-skew correction: more than MAX_FUTURE (24 h)
  after `receivedAt`, it is set to `receivedAt`, as Segment does (a device clock
  set years ahead must not date a user's last visit into the future); before
  EARLIEST_TIMESTAMP (2000-01-01T00:00:00Z), the message is rejected, naming
  the field it came from. Old history imports fine: the bound is absolute, the
  future clamp is relative to each line's `receivedAt`.
- Every field's value nests objects and arrays at most MAX_NESTING_DEPTH (64)
  levels deep (`properties` itself is level 1); deeper is rejected naming the
  field. The JSON encoder stops at 254 levels, and a message is encoded on its
  way to the queue; 64 is far more than any SDK sends.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from crm.storable import MAX_JSON_DEPTH, json_nested_deeper_than

# Limits of the Segment HTTP API.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
# The data store's column widths (crm.models: Event.name, Profile.user_id, ...).
MAX_ID_LENGTH = 255

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

# The accepted event times (see the module docstring).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(hours=24)
# The deepest nesting of objects and arrays in a message's field (see the module
# docstring): the store's one limit, so what a collector stored can be sent back
# through the profiles API and the console unchanged.
MAX_NESTING_DEPTH = MAX_JSON_DEPTH


class MessageError(ValueError):
    """A message the API rejects; `field` names the offending field."""

    def __init__(self, field: str, error: str) -> None:
        super().__init__(error)
        self.field = field
        self.error = error

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.error}


def parse_time(value: Any, field: str) -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime; None when absent.
    A time without an offset is taken as UTC, as Segment does."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MessageError(field, f"{field} must be an ISO-8601 date string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MessageError(field, f"{field} must be an ISO-8601 date string, got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+14:00 is a year-0 time in UTC: none to store or compare.
        raise MessageError(field, f"{field} is out of range (years 1-9999 in UTC), got {value[:40]!r}") from None


def parse_received_at(value: Any, *, now: datetime) -> datetime | None:
    """An imported line's own `receivedAt` (exports carry it), the reference of
    its clock-skew correction and future clamp; None when absent. It must lie
    between EARLIEST_TIMESTAMP and MAX_FUTURE after `now`: a line received
    "in 9999" would otherwise carry its events past the clamp."""
    received_at = parse_time(value, "receivedAt")
    if received_at is None:
        return None
    if received_at < EARLIEST_TIMESTAMP:
        raise MessageError("receivedAt", f"receivedAt must not be before {EARLIEST_TIMESTAMP.isoformat()}")
    if received_at - now > MAX_FUTURE:
        raise MessageError("receivedAt", "receivedAt must not be in the future")
    return received_at


def corrected_timestamp(*, timestamp: datetime | None, sent_at: datetime | None, received_at: datetime) -> datetime:
    """Segment's clock-skew correction: the device's clock may be wrong, but the
    time between the event and the send is measured on that same clock, so
    `timestamp = receivedAt - (sentAt - originalTimestamp)`. Without `sentAt`
    (server-side libraries) the timestamp is trusted; without a timestamp the
    message happened when it was received. A result more than MAX_FUTURE after
    `receivedAt` is `receivedAt` (Segment's rule). The caller rejects one before
    EARLIEST_TIMESTAMP; a correction past the calendar's ends returns its end."""
    if timestamp is None:
        return received_at
    corrected = timestamp
    if sent_at is not None:
        try:
            corrected = received_at - (sent_at - timestamp)
        except OverflowError:
            # Sent thousands of years after (or before) the event: the result
            # lies beyond the calendar, on the side the bounds then decide.
            corrected = datetime.min.replace(tzinfo=UTC) if sent_at > timestamp else datetime.max.replace(tzinfo=UTC)
    # A difference, not `received_at + MAX_FUTURE`: no sum that can overflow.
    if corrected - received_at > MAX_FUTURE:
        return received_at
    return corrected


def nesting_check(fields: dict[str, Any]) -> None:
    """Raise MessageError naming the first field of `fields` (a message, or the
    batch envelope's parts) nested deeper than MAX_NESTING_DEPTH."""
    for name, value in fields.items():
        if json_nested_deeper_than(value, MAX_NESTING_DEPTH):
            shown = name if len(name) <= 100 else name[:100] + "…"
            raise MessageError(shown, f"{shown} is nested more than {MAX_NESTING_DEPTH} levels deep")


def nesting_bounded(text: bytes) -> bool:
    """Whether JSON `text` holding one object cannot nest any of its fields deeper
    than MAX_NESTING_DEPTH: it has at most that many brackets besides its own
    (a count in C, ~0.2 µs for a message; brackets inside strings only make it
    stricter). Lets the common message skip `nesting_check`'s walk."""
    return text.count(b"{") + text.count(b"[") <= MAX_NESTING_DEPTH + 1


def _identifier(raw: dict[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None or value == "":
        return None
    # Numbers are accepted and stored as strings, as the SDKs that allow
    # numeric ids (analytics-python, analytics-node) send them.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageError(field, f"{field} must be a string")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_ID_LENGTH:
        raise MessageError(field, f"{field} must be at most {MAX_ID_LENGTH} characters")
    return text


def _object(raw: dict[str, Any], field: str) -> dict[str, Any] | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MessageError(field, f"{field} must be an object")
    return value


def _name(raw: dict[str, Any], field: str, *, required: bool) -> str:
    value = raw.get(field)
    if value is None or value == "":
        if required:
            raise MessageError(field, f"{field} is required")
        return ""
    if not isinstance(value, str):
        raise MessageError(field, f"{field} must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise MessageError(field, f"{field} must be at most {MAX_ID_LENGTH} characters")
    return value


def _generated_message_id(raw: dict[str, Any], project_id: int, sent_at: datetime | None) -> str:
    """A message id for a message sent without one. Derived from the message's
    content when it carries a time (a retry of the same request gets the same
    id, so a retry after an ambiguous failure is still stored once); random when
    nothing distinguishes two identical messages sent at different times."""
    if raw.get("timestamp") or raw.get("originalTimestamp") or sent_at is not None:
        digest = hashlib.sha256(
            orjson.dumps([project_id, raw, sent_at.isoformat() if sent_at else None], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        return f"gen-{digest[:32]}"
    return f"gen-{uuid.uuid4().hex}"


def message_normalize(
    raw: Any,
    *,
    project_id: int,
    received_at: datetime,
    type_hint: str | None = None,
    batch_sent_at: datetime | None = None,
    batch_context: dict[str, Any] | None = None,
    check_size: bool = True,
    check_depth: bool = True,
    received_at_text: str | None = None,
) -> dict[str, Any]:
    """Validate one message and return its normalised form, or raise MessageError.

    `type_hint` is the type implied by the endpoint (`/v1/track`); batch
    messages carry their own `type`. `batch_sent_at` and `batch_context` are
    the batch envelope's `sentAt` and `context` (a message's own values win).
    `check_size=False` skips the 32 KB check when the caller knows the whole
    body is smaller than that, `check_depth=False` the nesting check when the
    caller knows the body passes `nesting_bounded`; `received_at_text` is
    `received_at.isoformat()` when the caller has it already (one request, many
    messages).
    """
    if not isinstance(raw, dict):
        raise MessageError("message", "each message must be a JSON object")
    if check_size or check_depth:
        # First: the encoder (here, for the message id, and the publisher's)
        # cannot encode what is nested too deep.
        try:
            text = orjson.dumps(raw)
        except orjson.JSONEncodeError:
            text = b""
        if not text or (check_depth and not nesting_bounded(text)):
            nesting_check(raw)
        if not text:
            raise MessageError("message", "message cannot be encoded as JSON")
        if check_size and len(text) > MAX_MESSAGE_BYTES:
            raise MessageError("message", f"message is larger than {MAX_MESSAGE_BYTES // 1024} KB")
    kind = type_hint or raw.get("type")
    if kind not in MESSAGE_TYPES:
        if kind is None:
            raise MessageError("type", "type is required: one of " + ", ".join(MESSAGE_TYPES))
        raise MessageError("type", f"type must be one of {', '.join(MESSAGE_TYPES)}, got {str(kind)[:40]!r}")

    user_id = _identifier(raw, "userId")
    anonymous_id = _identifier(raw, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise MessageError("userId", "userId or anonymousId is required")
    message_id = _identifier(raw, "messageId")

    context = _object(raw, "context")
    if batch_context:
        context = {**batch_context, **context} if context else dict(batch_context)
    properties = _object(raw, "properties")
    traits = _object(raw, "traits")
    _object(raw, "integrations")

    out: dict[str, Any] = {"type": kind}
    if kind == "track":
        out["event"] = _name(raw, "event", required=True)
    elif kind in ("page", "screen"):
        out["event"] = _name(raw, "name", required=False) or kind
        if kind == "page" and raw.get("category") not in (None, ""):
            out["category"] = _name(raw, "category", required=False)
    elif kind == "identify":
        out["event"] = kind
        # RudderStack's SDKs send identify traits in context.traits.
        context_traits = context.get("traits") if context else None
        if isinstance(context_traits, dict) and context_traits:
            traits = {**context_traits, **(traits or {})}
    elif kind == "group":
        out["event"] = kind
        group_id = _identifier(raw, "groupId")
        if group_id is None:
            raise MessageError("groupId", "groupId is required")
        out["groupId"] = group_id
    else:  # alias
        out["event"] = kind
        previous_id = _identifier(raw, "previousId")
        if previous_id is None:
            raise MessageError("previousId", "previousId is required")
        if user_id is None:
            raise MessageError("userId", "userId is required")
        out["previousId"] = previous_id

    time_field = "timestamp"
    timestamp = parse_time(raw.get("timestamp"), time_field)
    if timestamp is None:
        time_field = "originalTimestamp"
        timestamp = parse_time(raw.get(time_field), time_field)
    sent_at = parse_time(raw.get("sentAt"), "sentAt") or batch_sent_at
    event_time = corrected_timestamp(timestamp=timestamp, sent_at=sent_at, received_at=received_at)
    if event_time < EARLIEST_TIMESTAMP:
        earliest = EARLIEST_TIMESTAMP.isoformat()
        raise MessageError(time_field, f"{time_field} must not be before {earliest} (after clock-skew correction)")

    out["messageId"] = message_id or _generated_message_id(raw, project_id, sent_at)
    if user_id is not None:
        out["userId"] = user_id
    if anonymous_id is not None:
        out["anonymousId"] = anonymous_id
    if properties:
        out["properties"] = properties
    if traits:
        out["traits"] = traits
    if context:
        out["context"] = context
    out["timestamp"] = event_time.isoformat()
    out["receivedAt"] = received_at_text or received_at.isoformat()
    return out
