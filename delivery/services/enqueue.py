"""Enqueue: messages become rows before any provider call, and their send
tasks are handed to the broker once those rows are committed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import json_param
from delivery.channels import channel_get
from delivery.models import ChannelName, MessageState, QuietHoursPolicy, SkipReason
from delivery.outcomes import outcomes_told
from delivery.services.claim import Claimed, ClaimRow, claim_token, claimed_rules_apply
from delivery.services.told import OUTCOME_COLUMNS, inserted_outcomes

# messages_enqueue refuses more rows than this in one call: callers plan their
# fan-out in chunks (each its own transaction), so a crash resumes.
ENQUEUE_MAX = 10_000


@dataclass
class MessageIn:
    """One message to enqueue. `skip_reason` set: the message is recorded as
    skipped from the start (a control group, a template that failed to render),
    so the results say why the profile got nothing."""

    profile_id: int
    channel: str
    idempotency_key: str
    content: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    # Empty: resolved from the profile when sent (email, phone, latest push token).
    to: str = ""
    marketing: bool = True
    quiet_hours_policy: str = ""  # "" = the project's
    not_before: datetime | None = None
    cutoff_at: datetime | None = None
    skip_reason: str = ""
    error: str = ""
    # The sender's label of the row ("variant:5"), handed back in every Outcome.
    label: str = ""
    # Product ids the message carries, in slot order (per-product results, tracked links).
    items: list[str] = field(default_factory=list)
    # A message id reserved beforehand (message_ids_reserve) so the content can carry
    # tracked links naming it; None: the insert assigns one.
    id: int | None = None


@dataclass(frozen=True)
class EnqueueResult:
    created: int  # rows inserted (queued, claimed and skipped)
    duplicates: int  # keys already enqueued before: nothing inserted for them
    queued_ids: list[int]  # the new queued rows, in id order
    # send_now: the new rows claimed by this call (the rules passed), sent after commit.
    claimed: int = 0


def _check(messages: Sequence[MessageIn], throttle_per_minute: int | None) -> None:
    if len(messages) > ENQUEUE_MAX:
        raise ValueError(f"messages: at most {ENQUEUE_MAX} a call, got {len(messages)}")
    if throttle_per_minute is not None and throttle_per_minute < 1:
        raise ValueError(f"throttle_per_minute: must be at least 1, got {throttle_per_minute}")
    for i, m in enumerate(messages):
        if m.channel not in ChannelName.values:
            raise ValueError(f"messages[{i}].channel: {m.channel!r} is not one of {', '.join(ChannelName.values)}")
        if not m.idempotency_key or len(m.idempotency_key) > 255:
            raise ValueError(f"messages[{i}].idempotency_key: must be 1 to 255 characters")
        if len(m.source) > 255:
            raise ValueError(f"messages[{i}].source: at most 255 characters")
        if m.skip_reason and m.skip_reason not in SkipReason.values:
            raise ValueError(f"messages[{i}].skip_reason: {m.skip_reason!r} is not a skip reason")
        if m.quiet_hours_policy and m.quiet_hours_policy not in QuietHoursPolicy.values:
            raise ValueError(f"messages[{i}].quiet_hours_policy: {m.quiet_hours_policy!r} is not discard or delay")
        if not isinstance(m.content, dict):
            raise ValueError(f"messages[{i}].content: must be a dict")
        if len(m.label) > 64:
            raise ValueError(f"messages[{i}].label: at most 64 characters")
        if not isinstance(m.items, list) or not all(isinstance(item, str) for item in m.items):
            raise ValueError(f"messages[{i}].items: must be a list of product ids (strings)")
        if m.id is not None and (type(m.id) is not int or m.id < 1):
            raise ValueError(f"messages[{i}].id: must be a reserved message id (message_ids_reserve)")


# A row's id: the reserved one when the caller gave it (its content names it in
# tracked links), else the column's own sequence, as the default would.
ID_SQL = "COALESCE((e->>{index})::bigint, nextval(pg_get_serial_sequence('delivery_message', 'id')))"


def message_ids_reserve(*, count: int) -> list[int]:
    """`count` fresh message ids from delivery_message's own sequence, for a
    sender whose rendered content must name its message (tracked links, the
    open pixel) before the row exists: hand them back in MessageIn.id. An id
    reserved and never used is a gap in the sequence, nothing more."""
    if count < 0 or count > ENQUEUE_MAX:
        raise ValueError(f"count: must be 0 to {ENQUEUE_MAX}, got {count}")
    if not count:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('delivery_message', 'id')) FROM generate_series(1, %s)", [count]
        )
        return [r[0] for r in cursor.fetchall()]


def messages_enqueue(
    *,
    project_id: int,
    messages: Sequence[MessageIn],
    throttle_per_minute: int | None = None,
    now: datetime | None = None,
    send_now: bool = False,
) -> EnqueueResult:
    """Insert `messages` for the project's profiles in one statement,
    `INSERT ... ON CONFLICT (project_id, idempotency_key) DO NOTHING`: a key
    enqueued before (a re-run of the same fan-out, a redelivered task) inserts
    nothing and sends nothing again. Messages with a skip_reason are stored as
    skipped. `throttle_per_minute` limits each message's source (at claim).

    Side effect: once the caller's transaction commits, the new queued rows
    that are due go to the `sends` queue in batches of the channel's
    max_batch, by id; rows not yet due (not_before later) are dispatched by the
    sweeper when they are. Raises ValueError naming the field of a bad message,
    or the profiles that are not the project's (nothing is inserted then).

    `send_now` (a sender that is itself a task on `sends`, e.g. a campaign's
    chunk): the due rows without a skip are inserted already claimed by this
    process, and the claim's rules are applied to them in the same transaction
    (delivery.services.claim.claimed_rules_apply: the ones they end are
    skipped or failed with their reason, the delayed ones queued); once the
    caller's transaction commits, the rest are sent from this process
    (delivery.services.send.messages_send_claimed) instead of by send tasks:
    one write of each row fewer (no claim UPDATE) and no trip through the
    broker. A process killed after that commit leaves its rows claimed, and
    the sweeper queues them again after DELIVERY_CLAIM_TIMEOUT_SECONDS, as for
    a killed send task."""
    _check(messages, throttle_per_minute)
    for i, m in enumerate(messages):
        if m.channel == ChannelName.IN_APP:
            raise ValueError(
                f"messages[{i}].channel: in_app messages are not enqueued (there is no provider): "
                "they are recorded when shown, delivery.services.record.messages_record"
            )
    if not messages:
        return EnqueueResult(created=0, duplicates=0, queued_ids=[])
    now = now or timezone.now()
    token = claim_token() if send_now else ""
    profile_ids = sorted({m.profile_id for m in messages})

    def claims(m: MessageIn) -> bool:
        return send_now and not m.skip_reason and (m.not_before is None or m.not_before <= now)

    rows = [
        [
            m.profile_id,
            m.channel,
            m.idempotency_key,
            m.source,
            m.content,
            m.to,
            MessageState.SKIPPED if m.skip_reason else MessageState.CLAIMED if claims(m) else MessageState.QUEUED,
            m.skip_reason,
            m.marketing,
            m.quiet_hours_policy,
            (m.not_before or now).isoformat(),
            m.cutoff_at.isoformat() if m.cutoff_at else None,
            # A due row's task is dispatched at commit; a later one by the sweeper.
            now.isoformat() if not m.skip_reason and (m.not_before is None or m.not_before <= now) else None,
            m.error,
            m.label,
            m.items,
            m.id,
            # Claimed at insert (send_now): by this call's token, its first attempt.
            token if claims(m) else "",
            now.isoformat() if claims(m) else None,
            1 if claims(m) else 0,
        ]
        for m in messages
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM crm_profile WHERE project_id = %s AND id = ANY(%s)", [project_id, profile_ids])
        missing = sorted(set(profile_ids) - {r[0] for r in cursor.fetchall()})
        if missing:
            raise ValueError(f"messages: profiles {missing[:10]} are not profiles of project {project_id}")
        cursor.execute(
            "INSERT INTO delivery_message AS m (id, project_id, profile_id, channel, idempotency_key, source, "
            'content, "to", state, skip_reason, marketing, quiet_hours_policy, not_before, cutoff_at, '
            "dispatched_at, error, label, items, throttle_per_minute, attempts, claimed_by, claimed_at, "
            "provider_id, created_at) "
            f"SELECT {ID_SQL.format(index=16)}, %s, (e->>0)::bigint, e->>1, e->>2, e->>3, e->4, e->>5, e->>6, "
            "e->>7, (e->>8)::boolean, e->>9, (e->>10)::timestamptz, (e->>11)::timestamptz, "
            "(e->>12)::timestamptz, e->>13, e->>14, e->15, %s::integer, (e->>19)::smallint, e->>17, "
            "(e->>18)::timestamptz, '', %s "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, idempotency_key) DO NOTHING "
            "RETURNING m.id, m.channel, m.state, m.dispatched_at IS NOT NULL, m.skip_reason, m.idempotency_key, "
            f"{OUTCOME_COLUMNS}",
            [project_id, throttle_per_minute, now, json_param(rows)],
        )
        returned = cursor.fetchall()
        # Told in the insert's transaction, for the rows it really inserted (a key
        # enqueued before returns nothing): created for each, skipped with its reason too.
        outcomes_told(inserted_outcomes([(r[2], r[4], r[6:]) for r in returned], at=now))
        claimed = _claimed_at_insert(messages, returned, project_id, throttle_per_minute, now) if send_now else []
    inserted = [r[:4] for r in returned]
    queued = sorted((r[0], r[1]) for r in inserted if r[2] == MessageState.QUEUED)
    due: dict[str, list[int]] = defaultdict(list)
    for message_id, channel, state, dispatched in inserted:
        if state == MessageState.QUEUED and dispatched:
            due[channel].append(message_id)
    if due:
        transaction.on_commit(lambda: messages_dispatch(by_channel=due))
    if claimed:
        from delivery.services.send import messages_send_claimed

        transaction.on_commit(lambda: messages_send_claimed(claimed=claimed, token=token, now=now))
    return EnqueueResult(
        created=len(inserted),
        duplicates=len(messages) - len(inserted),
        queued_ids=[i for i, _ in queued],
        claimed=len(claimed),
    )


def _claimed_at_insert(
    messages: Sequence[MessageIn],
    returned: Sequence[Sequence[Any]],
    project_id: int,
    throttle_per_minute: int | None,
    now: datetime,
) -> list[Claimed]:
    """The claim's rules over the rows the INSERT made claimed (RETURNING: id,
    channel, state, _, _, idempotency_key), from the callers' messages in
    memory rather than read back (the content is most of a row)."""
    by_key: dict[str, MessageIn] = {}
    for m in messages:
        by_key.setdefault(m.idempotency_key, m)  # a key given twice: the first is the one inserted
    rows = []
    for r in returned:
        if r[2] != MessageState.CLAIMED:
            continue
        m = by_key[r[5]]
        rows.append(
            ClaimRow(
                id=r[0],
                project_id=project_id,
                profile_id=m.profile_id,
                channel=m.channel,
                idempotency_key=m.idempotency_key,
                source=m.source,
                to=m.to,
                content=m.content,
                marketing=m.marketing,
                quiet_hours_policy=m.quiet_hours_policy,
                cutoff_at=m.cutoff_at,
                throttle_per_minute=throttle_per_minute,
                attempts=1,
            )
        )
    return claimed_rules_apply(rows=rows, now=now)


def id_batches(ids: Iterable[int], size: int) -> list[list[int]]:
    ordered = sorted(ids)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def messages_dispatch(*, by_channel: dict[str, list[int]], countdown: float | None = None) -> int:
    """Hand send tasks to the `sends` queue: the ids of each channel in batches
    of its max_batch, by id. Call after commit (the worker must see the rows).
    Returns how many tasks were sent."""
    from delivery.tasks import messages_send_task

    tasks = 0
    for channel, ids in by_channel.items():
        for batch in id_batches(ids, channel_get(channel).max_batch):
            messages_send_task.apply_async(args=[batch], countdown=countdown)
            tasks += 1
    return tasks
