"""The claim: queued messages become claimed by ONE conditional UPDATE, and in
the same transaction every rule that decides whether a message may go now is
applied to them: cutoff, subscription, address, provider settings, quiet hours,
frequency caps, minimum gap, throttle.

Why the rules live inside the claim's transaction: caps and throttles count
rows (sent + claimed) of the Message table, and two batches racing for the same
profile (two campaigns, a retry and a campaign) must not both pass. Each claim
takes a transaction-scoped advisory lock per profile whose channel has caps or
a minimum gap in its project (and per throttled source),
in one global order (profiles by id, then sources by key) so two claims never
deadlock, and counts only after holding it: under READ COMMITTED each statement
sees what committed before it started, so the second claim sees the first's
claimed rows. The locks are advisory, not `SELECT ... FOR UPDATE` of the profile
rows, so the ingest workers' profile updates never wait for a claim.
"""

from __future__ import annotations

import os
import socket
import uuid
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction

from crm.bulk import json_param
from crm.models import Project
from crm.selectors import ProfileContact, profiles_contact
from delivery.models import (
    ChannelSettings,
    DeliverySettings,
    MessageState,
    QuietHoursPolicy,
    SkipReason,
    cap_window_seconds,
)
from delivery.outcomes import OutcomeKind, outcomes_told
from delivery.selectors import delivery_settings_get
from delivery.services.rules import contact_address, contact_skip_reason, quiet_hours_end, zone_get
from delivery.services.told import OUTCOME_COLUMNS, outcome_of
from delivery.unsubscribe import unsubscribe_url

# The two-key form of pg_advisory_xact_lock for throttles; profiles use the
# one-key (bigint) form, which PostgreSQL keeps in a separate key space.
THROTTLE_LOCK_CLASS = 7_301


@dataclass(frozen=True)
class Claimed:
    """A message claimed for sending now: the rules passed and its address is resolved."""

    id: int
    project_id: int
    profile_id: int
    channel: str
    idempotency_key: str
    to: str
    content: dict[str, Any]
    attempts: int


@dataclass
class ClaimRow:
    id: int
    project_id: int
    profile_id: int
    channel: str
    idempotency_key: str
    source: str
    to: str
    content: dict[str, Any]
    marketing: bool
    quiet_hours_policy: str
    cutoff_at: datetime | None
    throttle_per_minute: int | None
    attempts: int


_CLAIM_SQL = (
    "UPDATE delivery_message AS m SET state = 'claimed', claimed_at = %s, claimed_by = %s, "
    "attempts = m.attempts + 1 "
    "WHERE m.id IN ("
    # Rows another claim holds are skipped, not waited for (they are being
    # claimed), so two claims of overlapping id lists never deadlock.
    "  SELECT id FROM delivery_message WHERE id = ANY(%s) AND state = 'queued' AND not_before <= %s "
    "  ORDER BY id FOR UPDATE SKIP LOCKED"
    ") "
    'RETURNING m.id, m.project_id, m.profile_id, m.channel, m.idempotency_key, m.source, m."to", m.content, '
    "m.marketing, m.quiet_hours_policy, m.cutoff_at, m.throttle_per_minute, m.attempts"
)


def claim_token() -> str:
    """Who holds a claim: this host and process, and this batch."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _address(row: ClaimRow, contact: ProfileContact | None) -> str:
    if row.to:
        return row.to
    if row.channel == "webhook":
        url = row.content.get("url")
        return url if isinstance(url, str) else ""
    return contact_address(channel=row.channel, contact=contact)


def _content_of(row: ClaimRow) -> dict[str, Any]:
    """What the channel sends: the content plus what is made per message at
    claim: a marketing email's unsubscribe link, an SMS's status callback."""
    if row.channel == "sms" and not row.content.get("status_callback"):
        from delivery.receipts import twilio_status_url

        return {**row.content, "status_callback": twilio_status_url(project_id=row.project_id, message_id=row.id)}
    return _with_unsubscribe(row)


def _with_unsubscribe(row: ClaimRow) -> dict[str, Any]:
    """A marketing email's content with its signed unsubscribe link when the
    caller gave none: the email channel turns it into the List-Unsubscribe and
    List-Unsubscribe-Post headers (RFC 8058), which bulk senders must carry.
    Filled at claim, not at enqueue, so every caller's marketing email has one."""
    if row.channel != "email" or not row.marketing or row.content.get("unsubscribe_url"):
        return row.content
    url = unsubscribe_url(project_id=row.project_id, profile_id=row.profile_id, channel="email")
    return {**row.content, "unsubscribe_url": url}


def _recent_counted(
    *, project_id: int, channel: str, profile_ids: list[int], since: datetime, exclude: list[int]
) -> dict[int, list[datetime]]:
    """claimed_at of the profiles' counted marketing messages on `channel` since
    `since` (index message_cap_counts), leaving out this claim's own rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT profile_id, claimed_at FROM delivery_message "
            "WHERE profile_id = ANY(%s) AND channel = %s AND state IN ('claimed', 'sent') AND claimed_at >= %s "
            "AND project_id = %s AND marketing AND id <> ALL(%s)",
            [profile_ids, channel, since, project_id, exclude],
        )
        out: dict[int, list[datetime]] = defaultdict(list)
        for profile_id, claimed_at in cursor.fetchall():
            out[profile_id].append(claimed_at)
        return out


def _source_count(*, project_id: int, source: str, since: datetime, exclude: list[int]) -> int:
    """Counted messages of a source in the throttle's minute (index message_source_claimed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM delivery_message WHERE project_id = %s AND source = %s AND claimed_at > %s "
            "AND state IN ('claimed', 'sent') AND id <> ALL(%s)",
            [project_id, source, since, exclude],
        )
        return cursor.fetchone()[0]


class _Caps:
    """A project's caps and gap for one channel over the claim's profiles, kept
    current in memory as the claim passes messages."""

    def __init__(self, settings: DeliverySettings, channel: str, history: dict[int, list[datetime]]) -> None:
        self.rules = [
            (rule["max"], timedelta(seconds=cap_window_seconds(rule))) for rule in settings.caps.get(channel, [])
        ]
        self.gap = timedelta(seconds=settings.min_gap_seconds)
        self.history = history

    def admits(self, profile_id: int, now: datetime) -> bool:
        times = self.history.get(profile_id, [])
        if self.gap and any(t > now - self.gap for t in times):
            return False
        return all(sum(1 for t in times if t > now - window) < maximum for maximum, window in self.rules)

    def add(self, profile_id: int, now: datetime) -> None:
        self.history.setdefault(profile_id, []).append(now)


def messages_claim(*, message_ids: list[int], token: str, now: datetime) -> list[Claimed]:
    """Claim the queued, due messages among `message_ids` and apply the rules,
    in one transaction; returns the messages to send now (state claimed,
    claimed_by = token, address resolved). The others end the transaction
    skipped with their reason (cutoff_passed, unsubscribed, no_address,
    quiet_hours, capped), failed (channel_not_configured), or queued again with
    a later not_before (quiet hours with the delay policy, the throttle), their
    attempt not counted. Rows not queued, not due or held by another claim are
    left alone. Subscriptions, quiet hours, caps and the gap apply to marketing
    messages only; the throttle and the cutoff to every message."""
    if not message_ids:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [now, token, list(message_ids), now])
        # Django's psycopg2 setup hands jsonb to a raw cursor as text.
        rows = [ClaimRow(*r[:7], orjson.loads(r[7]), *r[8:]) for r in cursor.fetchall()]
        return claimed_rules_apply(rows=rows, now=now)


def claimed_rules_apply(*, rows: list[ClaimRow], now: datetime) -> list[Claimed]:
    """Inside the transaction that made `rows` claimed (the claim's UPDATE, or
    messages_enqueue inserting due rows already claimed): the rules, as
    messages_claim describes them. Returns the rows that may be sent now; the
    others are ended (skipped / failed, told) or queued again for later by one
    UPDATE. Takes the advisory locks of the caps and throttles, held to the
    end of the caller's transaction."""
    if not rows:
        return []
    with connection.cursor() as cursor:
        rows.sort(key=lambda r: r.id)
        batch_ids = [r.id for r in rows]
        projects = {r.project_id for r in rows}
        settings_of = {pk: delivery_settings_get(project_id=pk) for pk in projects}
        # Only caps and the gap count other rows of a profile: a channel without
        # them needs no profile lock (a campaign to a million profiles of a
        # project without caps takes none, and holds no lock-table slots).
        counted = {
            (pk, channel)
            for pk, s in settings_of.items()
            for channel in {r.channel for r in rows}
            if s.caps.get(channel) or s.min_gap_seconds
        }
        locked_profiles = sorted({r.profile_id for r in rows if r.marketing and (r.project_id, r.channel) in counted})
        if locked_profiles:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT unnest(%s::bigint[]) AS k ORDER BY k) AS s",
                [locked_profiles],
            )
        throttled = sorted({(r.project_id, r.source) for r in rows if r.throttle_per_minute})
        if throttled:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(k)) FROM "
                "(SELECT DISTINCT unnest(%s::text[]) AS k ORDER BY k) AS s",
                [THROTTLE_LOCK_CLASS, [f"{p}:{s}" for p, s in throttled]],
            )

        zones = {
            pk: zone_get(tz) or zoneinfo.ZoneInfo("UTC")
            for pk, tz in Project.objects.filter(pk__in=projects).values_list("pk", "timezone")
        }
        configured = set(
            ChannelSettings.objects.filter(project_id__in=projects, enabled=True).values_list("project_id", "channel")
        )
        contacts: dict[int, ProfileContact] = {}
        for project_id in projects:
            ids = sorted({r.profile_id for r in rows if r.project_id == project_id})
            # Only a push needs the devices' tokens: an email batch reads the profiles alone.
            push = any(r.channel == "push" for r in rows if r.project_id == project_id and not r.to)
            contacts.update(profiles_contact(project_id=project_id, profile_ids=ids, push_tokens=push))

        caps: dict[tuple[int, str], _Caps] = {}
        for project_id, channel in {(r.project_id, r.channel) for r in rows if r.marketing}:
            s = settings_of[project_id]
            rules = s.caps.get(channel, [])
            if not rules and not s.min_gap_seconds:
                continue
            longest = max([cap_window_seconds(rule) for rule in rules] + [s.min_gap_seconds])
            ids = sorted(
                {r.profile_id for r in rows if r.marketing and (r.project_id, r.channel) == (project_id, channel)}
            )
            history = _recent_counted(
                project_id=project_id,
                channel=channel,
                profile_ids=ids,
                since=now - timedelta(seconds=longest),
                exclude=batch_ids,
            )
            caps[(project_id, channel)] = _Caps(s, channel, history)
        throttle_left: dict[tuple[int, str], int] = {}
        throttle_limit: dict[tuple[int, str], int] = {}
        for key in throttled:
            limit = min(
                r.throttle_per_minute for r in rows if (r.project_id, r.source) == key and r.throttle_per_minute
            )
            used = _source_count(project_id=key[0], source=key[1], since=now - timedelta(minutes=1), exclude=batch_ids)
            throttle_limit[key], throttle_left[key] = limit, limit - used
        throttle_excess: dict[tuple[int, str], int] = defaultdict(int)

        claimed: list[Claimed] = []
        # [id, state, skip_reason, to, not_before or null, attempt counted (0/1)]
        changes: list[list[Any]] = []
        for r in rows:
            contact = contacts.get(r.profile_id)
            settings = settings_of[r.project_id]
            to = _address(r, contact)
            if r.cutoff_at is not None and now > r.cutoff_at:
                changes.append([r.id, MessageState.SKIPPED, SkipReason.CUTOFF_PASSED, r.to, None, 0])
                continue
            skip = contact_skip_reason(channel=r.channel, marketing=r.marketing, address=to, contact=contact)
            if skip:
                changes.append([r.id, MessageState.SKIPPED, skip, r.to, None, 0])
                continue
            if (r.project_id, r.channel) not in configured:
                changes.append([r.id, MessageState.FAILED, SkipReason.CHANNEL_NOT_CONFIGURED, r.to, None, 0])
                continue
            if r.marketing and settings.quiet_hours_start is not None and settings.quiet_hours_end is not None:
                zone = zone_get(contact.timezone if contact else "") or zones[r.project_id]
                end = quiet_hours_end(
                    now=now, zone=zone, start=settings.quiet_hours_start, end=settings.quiet_hours_end
                )
                if end is not None:
                    policy = r.quiet_hours_policy or settings.quiet_hours_policy
                    if policy == QuietHoursPolicy.DISCARD:
                        changes.append([r.id, MessageState.SKIPPED, SkipReason.QUIET_HOURS, r.to, None, 0])
                    else:
                        changes.append([r.id, MessageState.QUEUED, "", r.to, end.isoformat(), 0])
                    continue
            cap = caps.get((r.project_id, r.channel)) if r.marketing else None
            if cap is not None and not cap.admits(r.profile_id, now):
                changes.append([r.id, MessageState.SKIPPED, SkipReason.CAPPED, r.to, None, 0])
                continue
            key = (r.project_id, r.source)
            if r.throttle_per_minute and throttle_left[key] <= 0:
                # Spread the excess over the following minutes, a minute's allowance each.
                later = now + timedelta(minutes=1 + throttle_excess[key] // throttle_limit[key])
                throttle_excess[key] += 1
                changes.append([r.id, MessageState.QUEUED, "", r.to, later.isoformat(), 0])
                continue
            if r.throttle_per_minute:
                throttle_left[key] -= 1
            if cap is not None:
                cap.add(r.profile_id, now)
            # The address resolved here is stored with the result (delivery.services.send
            # records `to`): one UPDATE of the batch fewer. A claim that dies before its
            # record resolves it again at its next claim.
            claimed.append(
                Claimed(
                    id=r.id,
                    project_id=r.project_id,
                    profile_id=r.profile_id,
                    channel=r.channel,
                    idempotency_key=r.idempotency_key,
                    to=to,
                    content=_content_of(r),
                    attempts=r.attempts,
                )
            )
        if changes:
            cursor.execute(
                'UPDATE delivery_message AS m SET state = e->>1, skip_reason = e->>2, "to" = e->>3, '
                "not_before = COALESCE((e->>4)::timestamptz, m.not_before), "
                "attempts = m.attempts - 1 + (e->>5)::int, "
                # Queued again for later: no task is pending; the sweeper dispatches it when due.
                "dispatched_at = CASE WHEN e->>1 = 'queued' THEN NULL ELSE m.dispatched_at END "
                "FROM jsonb_array_elements(%s::jsonb) AS e WHERE m.id = (e->>0)::bigint "
                # Only the rows this claim ends are told (skipped / failed); the ones
                # queued again for later tell nothing until their own end.
                f"RETURNING m.state, m.skip_reason, {OUTCOME_COLUMNS}",
                [json_param(changes)],
            )
            outcomes_told(
                [
                    outcome_of(r[2:], kind=r[0], at=now, reason=r[1])
                    for r in cursor.fetchall()
                    if r[0] in (OutcomeKind.SKIPPED, OutcomeKind.FAILED)
                ]
            )
    return claimed
