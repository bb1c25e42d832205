"""Receipts: what the providers report after a send, stored once each and told
as Outcomes; and the SDK's `Notification Clicked`.

- SendGrid's Event Webhook posts batches of events to
  `/hooks/sendgrid/<token>` (the token names the project: sendgrid_webhook_url),
  signed with the account's ECDSA key; the project's email settings hold the
  public key (`event_webhook_public_key`), checked with the sendgrid library's
  EventWebhook. Each event names our message by the `message_id` our email
  channel puts in every personalization's custom_args, and is stored once by its
  `sg_event_id` (SendGrid retries a batch for up to 72 hours).
- Twilio calls each message's StatusCallback, `/hooks/twilio/<token>` (the
  token names the project and the message: twilio_status_url, put in the SMS
  content at claim), signed with the account's auth token (X-Twilio-Signature,
  twilio's RequestValidator). Stored once by (MessageSid, MessageStatus).
- FCM has no delivery receipts. The SDK tracks a click on a push (or an in-app
  message) as the event `Notification Clicked` with property `message_id`; the
  ingest workers' stored-events hook (events_stored_hook) records it as a click
  of that message, if the message is the project's and the profile's.

Every token is django.core.signing's over ids with a salt of its own, so a
token of project A can never name project B's messages, and the signature of
each request is checked with the settings of the project the token names.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.utils import timezone

from crm.services import profile_set_subscription
from delivery.outcomes import Outcome, OutcomeKind, outcomes_told
from delivery.services.told import outcome_of
from delivery.tracking import _open_record, message_click_record, message_event_store, message_first_set

logger = logging.getLogger(__name__)

_SENDGRID_SALT = "delivery.hooks.sendgrid"
_TWILIO_SALT = "delivery.hooks.twilio"
HOOK_TOKEN_MAX = 200
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Events of one webhook call at most (SendGrid batches up to ~1,000 or 768 KB).
SENDGRID_EVENTS_MAX = 5000
# SendGrid's event -> ours. deferred and processed are not receipts of the recipient.
SENDGRID_KINDS = {
    "delivered": OutcomeKind.DELIVERED,
    "bounce": OutcomeKind.BOUNCED,
    "dropped": OutcomeKind.DROPPED,
    "spamreport": OutcomeKind.SPAM_REPORT,
    "unsubscribe": OutcomeKind.UNSUBSCRIBED,
    "group_unsubscribe": OutcomeKind.UNSUBSCRIBED,
    "open": OutcomeKind.OPENED,
    "click": OutcomeKind.CLICKED,
}
# Twilio's final MessageStatus values -> ours (queued, sending, sent are not final).
TWILIO_KINDS = {"delivered": OutcomeKind.DELIVERED, "undelivered": OutcomeKind.BOUNCED, "failed": OutcomeKind.BOUNCED}
NOTIFICATION_CLICKED = "Notification Clicked"


class HookError(Exception):
    """A receipt request refused: `status` is the HTTP answer (400 a malformed
    token or body, 403 a signature that does not verify, 404 no settings)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- hook URLs ------------------------------------------------------------------------


def sendgrid_webhook_url(*, project_id: int) -> str:
    """The Event Webhook "HTTP Post URL" to configure at SendGrid for the project."""
    token = signing.Signer(salt=_SENDGRID_SALT).sign(str(project_id))
    return f"{settings.PUBLIC_BASE_URL}/hooks/sendgrid/{token}"


def twilio_status_url(*, project_id: int, message_id: int) -> str:
    """The StatusCallback of one SMS (Twilio takes one per message)."""
    token = signing.Signer(salt=_TWILIO_SALT).sign_object([project_id, message_id])
    return f"{settings.PUBLIC_BASE_URL}/hooks/twilio/{token}"


def sendgrid_token_project(token: str) -> int:
    if len(token) > HOOK_TOKEN_MAX:
        raise HookError("not a webhook token", 400)
    try:
        value = signing.Signer(salt=_SENDGRID_SALT).unsign(token)
    except signing.BadSignature as exc:
        raise HookError("not a webhook token", 400) from exc
    if not value.isdigit():
        raise HookError("not a webhook token", 400)
    return int(value)


def twilio_token_target(token: str) -> tuple[int, int]:
    if len(token) > HOOK_TOKEN_MAX:
        raise HookError("not a status callback token", 400)
    try:
        payload = signing.Signer(salt=_TWILIO_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError) as exc:
        raise HookError("not a status callback token", 400) from exc
    if not (isinstance(payload, list) and len(payload) == 2 and all(type(v) is int for v in payload)):
        raise HookError("not a status callback token", 400)
    return payload[0], payload[1]


# --- signatures -------------------------------------------------------------------


def _channel_settings(project_id: int, channel: str) -> dict[str, Any] | None:
    from delivery.selectors import channel_settings_get

    stored = channel_settings_get(project_id=project_id, channel=channel)
    return stored.settings if stored is not None and stored.enabled else None


def sendgrid_signature_check(*, project_id: int, body: bytes, signature: str, timestamp: str) -> None:
    """Raises HookError(403) unless `body` is signed by the key of the project's
    email settings (HookError(404) when the project has no key configured)."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    email = _channel_settings(project_id, "email")
    public_key = (email or {}).get("event_webhook_public_key")
    if not public_key:
        raise HookError("this project has no SendGrid event webhook key configured", 404)
    if not signature or not timestamp:
        raise HookError(f"unsigned: {SENDGRID_SIGNATURE_HEADER} and {SENDGRID_TIMESTAMP_HEADER} are required", 403)
    try:
        hook = EventWebhook(public_key)
        payload = body.decode()
        valid = hook.verify_signature(payload, signature, timestamp)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        valid = False
    if not valid:
        raise HookError("the signature does not verify", 403)


def twilio_signature_check(*, project_id: int, url: str, params: Mapping[str, str], signature: str) -> None:
    """Raises HookError(403) unless the request is signed with the project's SMS auth token."""
    from twilio.request_validator import RequestValidator

    sms = _channel_settings(project_id, "sms")
    if not sms or not sms.get("auth_token"):
        raise HookError("this project has no SMS settings", 404)
    if not signature or not RequestValidator(sms["auth_token"]).validate(url, dict(params), signature):
        raise HookError("the X-Twilio-Signature does not verify", 403)


def public_key_problem(value: str) -> str | None:
    """What is wrong with a SendGrid verification key (the base64 of its DER
    public key, as SendGrid's Mail Settings show it); None when it loads."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    try:
        base64.b64decode(value, validate=True)
        EventWebhook().convert_public_key_to_ecdsa(value)
    except (ValueError, TypeError, binascii.Error):
        return "Not a SendGrid verification key (the base64 public key of the Event Webhook's signature)."
    return None


# --- recording ----------------------------------------------------------------------


def _receipt(
    *,
    project_id: int,
    message_id: int,
    kind: str,
    dedupe_key: str,
    at: datetime,
    data: Mapping[str, Any],
    reason: str = "",
) -> list[Outcome]:
    """A receipt stored once; its Outcome when new. `delivered` is told once per
    message (the first sets delivered_at); the others once per provider event."""
    if not message_event_store(
        project_id=project_id, message_id=message_id, kind=kind, dedupe_key=dedupe_key, at=at, data=data
    ):
        return []
    if kind == OutcomeKind.DELIVERED:
        first = message_first_set(project_id=project_id, message_id=message_id, column="delivered_at", at=at)
        return [outcome_of(first, kind=kind, at=at)] if first is not None else []
    from delivery.tracking import _message_columns

    columns = _message_columns(project_id=project_id, message_id=message_id)
    return [outcome_of(columns, kind=kind, at=at, reason=reason)] if columns is not None else []


def _event_time(value: Any, default: datetime) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 2**33:
        return datetime.fromtimestamp(value, tz=UTC)
    return default


def sendgrid_events_record(*, project_id: int, events: Sequence[Any], now: datetime | None = None) -> int:
    """Record a verified Event Webhook batch of the project, in one transaction:
    each event stored once by sg_event_id (a retried batch stores and tells
    nothing again), told as its Outcome (delivered: the message's first only);
    opens and clicks as the tracked ones are (delivery.tracking: once per
    message, once per link). A bounce (not a temporary `blocked`), a spam
    report or an unsubscribe turns the profile's email subscription off.
    Events naming no message of the project are ignored. Returns how many
    events were new."""
    now = now or timezone.now()
    new = 0
    with transaction.atomic():
        told: list[Outcome] = []
        for event in events:
            if not isinstance(event, dict):
                continue
            kind = SENDGRID_KINDS.get(str(event.get("event") or ""))
            raw_id = str(event.get("message_id") or "")
            if kind is None or not raw_id.isdigit() or len(raw_id) > 18:
                continue
            message_id = int(raw_id)
            at = _event_time(event.get("timestamp"), now)
            if kind == OutcomeKind.OPENED:
                stored = message_event_store(
                    project_id=project_id,
                    message_id=message_id,
                    kind=kind,
                    dedupe_key=f"sg:{event.get('sg_event_id') or ''}",
                    at=at,
                    data={"via": "sendgrid"},
                )
                if stored:
                    new += 1
                    told += _open_record(project_id=project_id, message_id=message_id, at=at, data={"via": "sendgrid"})
                continue
            if kind == OutcomeKind.CLICKED:
                # message_click_record tells its own outcomes: the earlier ones go first, in order.
                outcomes_told(told)
                told = []
                url = str(event.get("url") or "")
                if url.startswith(("http://", "https://")) and message_click_record(
                    project_id=project_id, message_id=message_id, url=url, via="sendgrid", now=at
                ):
                    new += 1
                continue
            event_id = str(event.get("sg_event_id") or "")
            if not event_id:
                continue
            reason = str(event.get("reason") or event.get("type") or "")[:200]
            data = {k: event[k] for k in ("event", "email", "reason", "type", "status", "sg_message_id") if k in event}
            outcomes = _receipt(
                project_id=project_id,
                message_id=message_id,
                kind=kind,
                dedupe_key=f"sg:{event_id}",
                at=at,
                data=data,
                reason=reason,
            )
            if not outcomes:
                continue
            new += 1
            told += outcomes
            unsubscribes = kind in (OutcomeKind.SPAM_REPORT, OutcomeKind.UNSUBSCRIBED) or (
                kind == OutcomeKind.BOUNCED and event.get("type") != "blocked"
            )
            if unsubscribes:
                profile_set_subscription(
                    project_id=project_id, profile_id=outcomes[0].profile_id, channel="email", subscribed=False
                )
        outcomes_told(told)
    return new


def twilio_status_record(
    *, project_id: int, message_id: int, params: Mapping[str, str], now: datetime | None = None
) -> bool:
    """Record a verified status callback of the project's SMS: delivered,
    undelivered and failed are stored once by (MessageSid, MessageStatus) and
    told (delivered: the first; undelivered / failed as `bounced` with Twilio's
    ErrorCode as the reason). Other statuses (queued, sent …) record nothing.
    Returns whether it was new."""
    now = now or timezone.now()
    status = str(params.get("MessageStatus") or params.get("SmsStatus") or "")
    kind = TWILIO_KINDS.get(status)
    sid = str(params.get("MessageSid") or params.get("SmsSid") or "")
    if kind is None or not sid:
        return False
    error_code = str(params.get("ErrorCode") or "")
    with transaction.atomic():
        told = _receipt(
            project_id=project_id,
            message_id=message_id,
            kind=kind,
            dedupe_key=f"twilio:{sid}:{status}"[:255],
            at=now,
            data={"status": status, "sid": sid, "error_code": error_code},
            reason=f"twilio {status}" + (f" {error_code}" if error_code else ""),
        )
        outcomes_told(told)
    return bool(told)


def events_stored_hook(project_id: int, events: list[Any]) -> None:
    """The ingest workers' stored-events hook: each newly stored
    `Notification Clicked` whose property message_id names a message of this
    project and of the event's profile is that message's click (once per
    message: delivery.tracking's dedupe key `click:notification`). Runs inside
    the batch's transaction: a redelivered batch stores no event again, so it
    records no click again. One query for the batch's messages."""
    clicks: list[tuple[int, int, str]] = []
    for event in events:
        if event.name != NOTIFICATION_CLICKED:
            continue
        raw = event.properties.get("message_id") if isinstance(event.properties, dict) else None
        raw = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if raw.isdigit() and len(raw) <= 18:
            url = event.properties.get("url") or event.properties.get("deeplink") or ""
            clicks.append((int(raw), event.profile_id, url if isinstance(url, str) else ""))
    if not clicks:
        return
    # Its own savepoint, taken only for a batch with clicks (hook.savepoint = False
    # below): a failure rolls back these writes alone, never the batch's events.
    with transaction.atomic():
        _notification_clicks_record(project_id, clicks)


# No savepoint from ingestion for every batch: ~0.4 ms each (ingestion/hooks.py) for a
# hook that almost always finds no Notification Clicked; it takes its own when it writes.
events_stored_hook.savepoint = False  # type: ignore[attr-defined]


def _notification_clicks_record(project_id: int, clicks: list[tuple[int, int, str]]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, profile_id FROM delivery_message WHERE project_id = %s AND id = ANY(%s)",
            [project_id, sorted({c[0] for c in clicks})],
        )
        owner = dict(cursor.fetchall())
    for message_id, profile_id, url in clicks:
        if owner.get(message_id) != profile_id:
            continue  # another profile's message (or none): not this user's click
        message_click_record(
            project_id=project_id, message_id=message_id, url=url, via="sdk", dedupe_key="click:notification"
        )
