"""Sending: claim, call the provider outside any transaction, record each result.

At most once or at least once, at the provider call: a message is claimed
(committed as `claimed`) before the call and recorded after it. A worker killed
between the call and the record leaves the row claimed; the sweeper puts it
back in the queue after DELIVERY_CLAIM_TIMEOUT_SECONDS and it is sent again, so
the provider may see it twice. The other order (record "sent" first, then call)
would lose it instead. A message that was never called for (killed before the
call) is sent once. We choose at least once, and narrow the duplicate to
"once more after a crash" with the idempotency key, passed to every channel in
`Outgoing.idempotency_key`: webhooks send it as the Standard Webhooks
`webhook-id` (receivers deduplicate on it, as the spec asks); email (SendGrid
v3) and SMS (Twilio Messages) have no idempotency header, so a crash can send
those once more; FCM v1 has none either (the channel may use it as the
message's collapse key, so the device shows one of the two).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import json_param
from crm.services import devices_clear_push_tokens
from delivery.channels import Outgoing, PermanentError, Result, TemporaryError, channel_get
from delivery.models import MessageState, SkipReason
from delivery.outcomes import OutcomeKind, outcome_hooks_active, outcomes_told
from delivery.selectors import channel_settings_get
from delivery.services.claim import Claimed, claim_token, messages_claim
from delivery.services.enqueue import messages_dispatch
from delivery.services.rules import retry_delay_seconds
from delivery.services.told import OUTCOME_COLUMNS, outcome_of

logger = logging.getLogger(__name__)


@dataclass
class SendSummary:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    tokens_cleared: int = 0
    retry_ids: list[int] = field(default_factory=list)
    # Seconds spent per stage ("claim", "call": the provider calls, "record"), for profiling.
    timing: dict[str, float] = field(default_factory=lambda: {"claim": 0.0, "call": 0.0, "record": 0.0})


def _call(channel_name: str, channel_settings: dict[str, Any], batch: list[Claimed]) -> list[Result]:
    """The provider call for one batch: one Result per message, whatever the channel does."""
    outgoing = [Outgoing(message_id=m.id, idempotency_key=m.idempotency_key, to=m.to, content=m.content) for m in batch]
    try:
        results = channel_get(channel_name).send_batch(channel_settings, outgoing)
    except Exception as exc:  # noqa: BLE001 - a channel bug must not strand claimed rows
        logger.exception("channel %s raised on a batch of %d", channel_name, len(batch))
        return [Result(message_id=m.id, error=TemporaryError(f"channel error: {exc!r}")) for m in batch]
    by_id = {r.message_id: r for r in results}
    return [
        by_id.get(m.id) or Result(message_id=m.id, error=TemporaryError("the channel gave no result")) for m in batch
    ]


def messages_send(*, message_ids: list[int], now: datetime | None = None) -> SendSummary:
    """Outside any transaction: claim `message_ids` (those queued and due;
    delivery.services.claim applies the rules), call each channel with the
    claimed ones in batches of its max_batch, outside a transaction, and record
    every result by one conditional UPDATE per batch (rows still claimed by this
    batch: a claim the sweeper gave to another worker meanwhile is not
    overwritten).

    Results: sent (provider_id, sent_at); TemporaryError: queued again with
    not_before = now + exponential backoff with jitter (the provider's
    retry_after as a floor), and a send task for them after that delay; after
    DELIVERY_MAX_ATTEMPTS attempts failed (retries_exhausted); PermanentError:
    failed with its reason (provider_rejected, invalid_token, no_address).
    clear_token: the profile's device with that push token loses it (crm)."""
    now = now or timezone.now()
    started = time.monotonic()
    token = claim_token()
    claimed = messages_claim(message_ids=message_ids, token=token, now=now)
    summary = SendSummary(claimed=len(claimed))
    summary.timing["claim"] = time.monotonic() - started
    _claimed_send(claimed=claimed, token=token, now=now, started=started, summary=summary)
    return summary


def messages_send_claimed(*, claimed: list[Claimed], token: str, now: datetime) -> SendSummary:
    """Outside any transaction: send messages this process already claimed and
    committed as claimed by `token` (messages_enqueue(send_now=True) inserts
    them so, the rules applied), and record each result, as messages_send does
    after its claim. `now` is the claim's time."""
    summary = SendSummary(claimed=len(claimed))
    _claimed_send(claimed=claimed, token=token, now=now, started=time.monotonic(), summary=summary)
    return summary


def _claimed_send(*, claimed: list[Claimed], token: str, now: datetime, started: float, summary: SendSummary) -> None:
    """The provider calls of claimed messages, by (project, channel) in batches
    of the channel's max_batch, each batch's results recorded before the next
    call; temporary errors get a send task after their backoff."""
    groups: dict[tuple[int, str], list[Claimed]] = defaultdict(list)
    for m in claimed:
        groups[(m.project_id, m.channel)].append(m)
    retry: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (project_id, channel_name), members in groups.items():
        stored = channel_settings_get(project_id=project_id, channel=channel_name)
        channel_settings = stored.settings if stored is not None else {}
        size = channel_get(channel_name).max_batch
        for start in range(0, len(members), size):
            batch = members[start : start + size]
            called = time.monotonic()
            results = _call(channel_name, channel_settings, batch)
            # The claim's clock plus the time spent since: a caller's fixed `now` stays consistent.
            done = now + timedelta(seconds=time.monotonic() - started)
            summary.timing["call"] += time.monotonic() - called
            recording = time.monotonic()
            _record(
                done=done,
                project_id=project_id,
                channel_name=channel_name,
                batch=batch,
                results=results,
                token=token,
                summary=summary,
                retry=retry,
            )
            summary.timing["record"] += time.monotonic() - recording
    if retry:
        by_channel = {ch: [i for i, _ in rows] for ch, rows in retry.items()}
        delay = max(d for rows in retry.values() for _, d in rows)
        transaction.on_commit(lambda: messages_dispatch(by_channel=by_channel, countdown=delay))


def _record(
    *,
    done: datetime,
    project_id: int,
    channel_name: str,
    batch: list[Claimed],
    results: list[Result],
    token: str,
    summary: SendSummary,
    retry: dict[str, list[tuple[int, float]]],
) -> None:
    max_attempts = settings.DELIVERY_MAX_ATTEMPTS
    # [id, state, skip_reason, provider_id, error, sent_at, not_before, dispatched_at, to]
    rows: list[list[Any]] = []
    dead_tokens: list[tuple[int, str]] = []
    for message, result in zip(batch, results, strict=True):
        error = result.error
        if result.clear_token and message.to:
            dead_tokens.append((message.profile_id, message.to))
        if error is None:
            sent_at = done.isoformat()
            rows.append([message.id, MessageState.SENT, "", result.provider_id, "", sent_at, None, None, message.to])
            summary.sent += 1
        elif isinstance(error, PermanentError):
            reason = error.reason if error.reason in SkipReason.values else SkipReason.PROVIDER_REJECTED
            rows.append(
                [message.id, MessageState.FAILED, reason, result.provider_id, str(error), None, None, None, message.to]
            )
            summary.failed += 1
        elif message.attempts >= max_attempts:
            text = f"{error} (attempt {message.attempts} of {max_attempts})"
            rows.append(
                [message.id, MessageState.FAILED, SkipReason.RETRIES_EXHAUSTED, "", text, None, None, None, message.to]
            )
            summary.failed += 1
        else:
            delay = retry_delay_seconds(
                attempts=message.attempts,
                base=settings.DELIVERY_RETRY_BASE_SECONDS,
                maximum=settings.DELIVERY_RETRY_MAX_SECONDS,
                retry_after=getattr(error, "retry_after", None),
            )
            at = (done + timedelta(seconds=delay)).isoformat()
            rows.append([message.id, MessageState.QUEUED, "", "", str(error), None, at, at, message.to])
            retry[channel_name].append((message.id, delay))
            summary.retrying += 1
            summary.retry_ids.append(message.id)
    # The record and its outcomes in one transaction: a listener's counters
    # commit with the states they count (with no listener, the UPDATE alone in
    # autocommit, as before: no BEGIN / COMMIT round trips). RETURNING names the
    # rows this record really changed: a stale claim (the sweeper gave the row
    # to another worker, which may have sent it) changes nothing and tells nothing.
    together = transaction.atomic() if outcome_hooks_active() else nullcontext()
    with together, connection.cursor() as cursor:
        cursor.execute(
            "UPDATE delivery_message AS m SET state = e->>1, skip_reason = e->>2, provider_id = e->>3, "
            "error = e->>4, sent_at = (e->>5)::timestamptz, "
            "not_before = COALESCE((e->>6)::timestamptz, m.not_before), dispatched_at = (e->>7)::timestamptz, "
            '"to" = e->>8 '
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "WHERE m.id = (e->>0)::bigint AND m.state = 'claimed' AND m.claimed_by = %s "
            f"RETURNING m.state, m.skip_reason, {OUTCOME_COLUMNS}",
            [json_param(rows), token],
        )
        outcomes_told(
            [
                outcome_of(r[2:], kind=r[0], at=done, reason=r[1])
                for r in cursor.fetchall()
                if r[0] in (OutcomeKind.SENT, OutcomeKind.FAILED)
            ]
        )
    if dead_tokens:
        summary.tokens_cleared += devices_clear_push_tokens(project_id=project_id, tokens=dead_tokens)


__all__ = ["SendSummary", "claim_token", "messages_send", "messages_send_claimed"]
