"""A run's fan-out: the audience walked in profile-id ranges, one chunk task
each, every chunk assigning, rendering and enqueueing its messages in ONE
delivery.services.messages_enqueue call.

Crash safety, step by step:
- run_start is idempotent on (campaign, occurrence) (the unique constraint of
  CampaignRun): a beat entry firing twice starts one run.
- The planner (run_plan_step, task campaigns.run_plan) plans a few chunks at a
  time (CAMPAIGNS_PLAN_AHEAD) and queues itself again behind them: the chunks'
  send batches then reach the `sends` queue between the chunks instead of
  behind the whole audience (first message within seconds, not after a
  million renders), and a pause takes effect at the next step. Chunk tasks are
  published BEFORE `planned_through` is committed: a planner that dies in
  between plans those ids again, and their keys insert nothing twice; the
  reverse order could lose a chunk. The plan task is acks_late, so a killed
  planner's step is redelivered and resumes from `planned_through`.
- A chunk (profiles_send) runs in one transaction under an advisory lock of
  (run, its first profile id), so a redelivered copy waits for the first and
  then finds its keys enqueued: it renders nothing, enqueues nothing and
  counts nothing. The run's counts are added in that same transaction, from
  the messages that were actually new.
Memory is one chunk's rows and contexts, whatever the audience size.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignChannel,
    CampaignRun,
    CampaignSettings,
    CampaignStatus,
    RunStatus,
    ScheduleKind,
    SegmentMembership,
    Variant,
)
from campaigns.results.decision import is_winner_run, run_plan, status_after_run
from campaigns.sending.assignment import Assignment, assign, assignment_rules
from campaigns.sending.context import ContextSpec, context_spec, contexts_build
from campaigns.sending.render import RenderError, variant_render
from crm.bulk import json_param
from crm.models import Profile
from crm.selectors import profile_reachable_q
from delivery.models import SkipReason
from delivery.selectors import profiles_skipped_now
from delivery.services import MessageIn, message_ids_reserve, messages_enqueue
from delivery.tracking import links_track

logger = logging.getLogger(__name__)

# The two-key advisory lock class of a chunk (delivery's claim uses 7301 for
# throttles and the one-key form for profiles: separate key spaces).
CHUNK_LOCK_CLASS = 7_302

# Count names of a run (CampaignRun.counts), besides one "variant:<id>" per variant.
COUNT_NAMES = (
    "planned",  # profile ids handed to chunks by the planner
    "processed",  # of those, handled by a chunk (a message row created, queued or skipped)
    "gone",  # planned ids that were no longer profiles of the project (merged away)
    "targeted",  # profiles that got a row: enqueued + control + system_control + template_error
    "enqueued",  # queued for sending
    "control",
    "system_control",
    "template_error",
    "cutoff_passed",  # per-user-time-zone sends whose local time had passed (schedule's skip policy)
    "unsubscribed",  # going now to a profile that opted out of the channel: skipped unrendered
    "no_address",  # going now to a profile without an address on the channel: skipped unrendered
    "held_for_winner",  # A/B test run: the rest, who get the winner (its own run), no message here
    "tested",  # A/B winner run: profiles of the test share, who had the test's message
    "control_before",  # A/B winner run: the control groups, held out (and recorded) by the test run
    "system_control_before",
)


def message_key(*, campaign_id: int, occurrence: str, profile_id: int, channel: str) -> str:
    """The delivery idempotency key of one campaign message."""
    return f"campaign:{campaign_id}:{occurrence}:profile:{profile_id}:{channel}"


def system_control_percent_get(*, project_id: int) -> int:
    value = CampaignSettings.objects.filter(project_id=project_id).values_list("system_control_percent", flat=True)
    return next(iter(value), 0) or 0


# --- runs --------------------------------------------------------------------------


def run_start(*, campaign_id: int, occurrence: str, planned_at: datetime, now: datetime | None = None) -> CampaignRun:
    """The run of (campaign, occurrence), created (and its planner queued after
    commit) if it does not exist yet; the existing one otherwise, untouched.
    Its cutoff_at is planned_at + the campaign's cutoff_minutes."""
    now = now or timezone.now()
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.channel == CampaignChannel.IN_APP:
        raise ValueError("channel: in-app campaigns have no runs (they are shown when the app is launched)")
    cutoff_at = planned_at + timedelta(minutes=campaign.cutoff_minutes) if campaign.cutoff_minutes else None
    with transaction.atomic():
        run, created = CampaignRun.objects.get_or_create(
            campaign_id=campaign_id,
            occurrence=occurrence,
            defaults={"planned_at": planned_at, "started_at": now, "cutoff_at": cutoff_at, "counts": {}},
        )
        if created:
            Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.SCHEDULED).update(
                status=CampaignStatus.RUNNING, updated_at=now
            )
            transaction.on_commit(lambda: run_plan_dispatch(run_id=run.pk))
    return run


def run_plan_dispatch(*, run_id: int) -> None:
    from campaigns.sending.tasks import run_plan_task

    run_plan_task.delay(run_id)


def audience_ids(*, campaign: Campaign, after: int, limit: int) -> list[int]:
    """The next `limit` profile ids of the campaign's audience above `after`:
    its segment's members (index segment_membership_unique, (segment, profile)),
    or, with no segment, the project's profiles reachable on the channel."""
    if campaign.segment_id is not None:
        return list(
            SegmentMembership.objects.filter(
                segment_id=campaign.segment_id, segment__project_id=campaign.project_id, profile_id__gt=after
            )
            .order_by("profile_id")
            .values_list("profile_id", flat=True)[:limit]
        )
    return list(
        Profile.objects.filter(reachable_q(channel=campaign.channel, marketing=campaign.marketing))
        .filter(project_id=campaign.project_id, pk__gt=after)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def reachable_q(*, channel: str, marketing: bool) -> Q:
    """Profiles reachable on `channel` (crm.selectors.profile_reachable_q); delivery
    checks both again when it sends (the profile may change meanwhile)."""
    return profile_reachable_q(channel, marketing=marketing)


def run_plan_step(*, run_id: int, chunks: int | None = None) -> bool:
    """Plan the run's next `chunks` chunks (CAMPAIGNS_PLAN_AHEAD): each is a
    chunk task of up to CAMPAIGNS_CHUNK_SIZE profile ids. Returns whether more
    remain (the caller queues the next step). Plans nothing for a paused or
    cancelled campaign, or a run that is not planning."""
    chunks = chunks or settings.CAMPAIGNS_PLAN_AHEAD
    size = settings.CAMPAIGNS_CHUNK_SIZE
    from campaigns.sending.tasks import profiles_send_task

    with transaction.atomic():
        run = CampaignRun.objects.select_for_update().select_related("campaign").get(pk=run_id)
        campaign = run.campaign
        if run.status != RunStatus.PLANNING or run.planning_finished_at is not None:
            return False
        if campaign.status == CampaignStatus.CANCELLED:
            run.status, run.finished_at = RunStatus.CANCELLED, timezone.now()
            run.save(update_fields=["status", "finished_at"])
            return False
        if campaign.status == CampaignStatus.PAUSED:
            return False
        after, planned, more = run.planned_through, 0, True
        for _ in range(chunks):
            ids = audience_ids(campaign=campaign, after=after, limit=size)
            if ids:
                profiles_send_task.apply_async(kwargs={"run_id": run.pk, "profile_ids": ids})
                after, planned = ids[-1], planned + len(ids)
            if len(ids) < size:
                more = False
                break
        run.planned_through = after
        fields = ["planned_through"]
        if not more:
            run.planning_finished_at = timezone.now()
            fields.append("planning_finished_at")
        run.save(update_fields=fields)
        # Added in SQL, not saved from `run`: chunks run in-process (no broker)
        # have added their counts to the row meanwhile.
        run_counts_add(run_id=run.pk, counts={"planned": planned})
    if not more:
        run_finish_if_complete(run_id=run_id)
    return more


def run_finish_if_complete(*, run_id: int, now: datetime | None = None) -> bool:
    """Mark the run done once its planner finished and every planned id was
    handled by a chunk; a one-off campaign is then completed, a recurring one
    waits for its next occurrence (scheduled). Returns whether it finished now."""
    now = now or timezone.now()
    with transaction.atomic():
        done = (
            CampaignRun.objects.filter(pk=run_id, status=RunStatus.PLANNING, planning_finished_at__isnull=False)
            .extra(
                where=[
                    "coalesce((counts->>'processed')::bigint, 0) + coalesce((counts->>'gone')::bigint, 0)"
                    " >= coalesce((counts->>'planned')::bigint, 0)"
                ]
            )
            .update(status=RunStatus.DONE, finished_at=now)
        )
        if done:
            run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
            campaign = run.campaign
            after = status_after_run(campaign=campaign, run=run) or (
                CampaignStatus.SCHEDULED
                if campaign.schedule_kind in (ScheduleKind.RECURRING, ScheduleKind.TRIGGERED)
                else CampaignStatus.COMPLETED
            )
            Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.RUNNING).update(status=after, updated_at=now)
    return bool(done)


def run_counts_add(*, run_id: int, counts: Mapping[str, int]) -> None:
    """Add `counts` to the run's counts in one UPDATE (the row lock is held to the
    end of the caller's transaction: do it last)."""
    add = {str(k): int(v) for k, v in counts.items() if v}
    if not add:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE campaigns_campaignrun SET counts = coalesce(("
            "  SELECT jsonb_object_agg(k, coalesce((counts->>k)::bigint, 0) + coalesce((%s::jsonb->>k)::bigint, 0))"
            "  FROM (SELECT jsonb_object_keys(counts) UNION SELECT jsonb_object_keys(%s::jsonb)) AS keys(k)"
            "), '{}'::jsonb) WHERE id = %s",
            [json_param(add), json_param(add), run_id],
        )


# --- chunks ------------------------------------------------------------------------


def _existing_keys(*, project_id: int, keys: Sequence[str]) -> set[str]:
    """Which of `keys` delivery already has (its unique (project, idempotency_key) index).
    Read here rather than through a delivery selector, which does not exist yet."""
    if not keys:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key FROM delivery_message WHERE project_id = %s AND idempotency_key = ANY(%s)",
            [project_id, list(keys)],
        )
        return {r[0] for r in cursor.fetchall()}


def profiles_send(
    *,
    campaign: Campaign,
    run: CampaignRun,
    profile_ids: Sequence[int],
    event: Mapping[str, Any] | None = None,
    not_before: datetime | None = None,
    not_before_of: Mapping[int, datetime] | None = None,
    skipped_of: Mapping[int, str] | None = None,
    variants: Sequence[Variant] | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Assign, render and enqueue the messages of `profile_ids` for the run, in
    ONE messages_enqueue call and one transaction; returns the counts this call
    added to the run (all zero for a chunk enqueued before).

    Control and system control groups are enqueued as skipped rows with their
    reason, a template error as a `template_error` skip with the error, so
    results and "why did X not get it" see every profile. `not_before` (or
    per profile `not_before_of`: the user's local time) delays the messages,
    and each message's cutoff_at is its not_before + the campaign's cutoff;
    `skipped_of` (profile -> skip reason, e.g. cutoff_passed) records profiles
    the schedule already rules out. `event`: the triggering event (name,
    properties, timestamp), in the templates as `event`, its product_id as
    `product`. Ids that are not profiles of the campaign's project count as gone."""
    now = now or timezone.now()
    project_id, channel = campaign.project_id, campaign.channel
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    variant_list = list(variants) if variants is not None else list(campaign.variants.all())
    # An A/B test first: the test run sends the test share, the winner run the rest (results.decision).
    plan = run_plan(campaign=campaign, run=run, variants=variant_list)
    variant_list = plan.variants
    by_id = {v.pk: v for v in variant_list}
    rules = assignment_rules(
        campaign,
        system_control_percent=system_control_percent_get(project_id=project_id),
        variants=variant_list,
        phase=plan.phase,
    )
    specs: dict[int, ContextSpec] = {}
    cutoff = timedelta(minutes=campaign.cutoff_minutes) if campaign.cutoff_minutes else None
    counts: Counter[str] = Counter()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [CHUNK_LOCK_CLASS, f"{run.pk}:{ids[0]}"])
            # KEY SHARE on the campaign row: campaign_cancel's FOR UPDATE waits for
            # this chunk to commit (then cancels its queued rows), and a chunk
            # starting after the cancel committed sees it and enqueues nothing.
            cursor.execute("SELECT status FROM campaigns_campaign WHERE id = %s FOR KEY SHARE", [campaign.pk])
            row = cursor.fetchone()
            if row is None or row[0] == CampaignStatus.CANCELLED:
                return {}
        keys = {
            pid: message_key(campaign_id=campaign.pk, occurrence=run.occurrence, profile_id=pid, channel=channel)
            for pid in ids
        }
        existing = _existing_keys(project_id=project_id, keys=list(keys.values()))
        fresh = [pid for pid in ids if keys[pid] not in existing]
        if not fresh:
            return {}
        groups = {pid: assign(rules, pid) for pid in fresh}
        if plan.test_occurrence is not None:
            # The winner run: whoever has a message of the test run (the share
            # cut moved, say) is `tested`, never sent twice.
            tested_keys = {
                pid: message_key(
                    campaign_id=campaign.pk, occurrence=plan.test_occurrence, profile_id=pid, channel=channel
                )
                for pid in fresh
                if groups[pid].group == "variant"
            }
            had = _existing_keys(project_id=project_id, keys=list(tested_keys.values()))
            for pid, key in tested_keys.items():
                if key in had:
                    groups[pid] = Assignment(group="tested")
        # The messages that go now and that delivery would skip for the profile's
        # contact alone (unsubscribed, no address; its claim checks the rest again)
        # are enqueued skipped with that reason, unrendered: 30 % of an email campaign
        # to the demo store's audience (docs/benchmarks.md, issue 14).
        # Later ones are rendered: the profile may subscribe or get an address meanwhile.
        going_now = [
            pid
            for pid in fresh
            if groups[pid].group == "variant"
            and not (skipped_of and pid in skipped_of)
            and _goes_now(due=(not_before_of or {}).get(pid, not_before), cutoff=cutoff, run=run, now=now)
        ]
        unreachable = profiles_skipped_now(
            project_id=project_id, channel=channel, profile_ids=going_now, marketing=campaign.marketing
        )
        spec_of: dict[int, ContextSpec] = {}
        bad_specs: dict[int, str] = {}
        for pid in fresh:
            variant = by_id.get(groups[pid].variant_id) if groups[pid].group == "variant" else None
            if variant is None or (skipped_of and pid in skipped_of) or pid in unreachable:
                continue
            if variant.pk in bad_specs:
                continue
            spec = specs.get(variant.pk)
            if spec is None:
                try:
                    spec = specs[variant.pk] = context_spec(
                        content=variant.content, recommendations=variant.recommendations
                    )
                except ValueError as exc:  # a variant edited past campaign_validate: its messages' error
                    bad_specs[variant.pk] = str(exc)
                    continue
            spec_of[pid] = spec
        contexts = contexts_build(
            project_id=project_id, channel=channel, profile_ids=fresh, spec_of=spec_of, event=event
        )
        # The profiles of the project among the fresh ids, KEY SHARE locked: a
        # merge deleting one of them waits for this transaction, so none vanishes
        # between this read and the enqueue (which refuses ids that are not
        # profiles of the project). The rest were merged away before: gone.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM crm_profile WHERE project_id = %s AND id = ANY(%s) FOR KEY SHARE",
                [project_id, fresh],
            )
            present = {r[0] for r in cursor.fetchall()}
        # Ids for the messages that will be rendered, so their tracked links name
        # them; one left unused (a template error) is a gap in the sequence.
        reserved = iter(message_ids_reserve(count=len([pid for pid in spec_of if pid in present])))
        messages: list[MessageIn] = []
        for pid in fresh:
            if pid not in present:
                counts["gone"] += 1
                continue
            group = groups[pid]
            if group.group == "held":
                # The test run's held-back rest: the winner run sends to them.
                counts["processed"] += 1
                counts["held_for_winner"] += 1
                continue
            if group.group == "tested" or (plan.phase == "winner" and group.group != "variant"):
                # The winner run: the tested had the test's message, the control
                # groups were recorded held out by the test run (once).
                counts["processed"] += 1
                counts["tested" if group.group == "tested" else f"{group.group}_before"] += 1
                continue
            due = (not_before_of or {}).get(pid, not_before)
            message = MessageIn(
                profile_id=pid,
                channel=channel,
                idempotency_key=keys[pid],
                source=campaign.source,
                marketing=campaign.marketing,
                quiet_hours_policy=campaign.quiet_hours_policy,
                not_before=due,
                cutoff_at=(due or now) + cutoff if cutoff else run.cutoff_at,
            )
            message.label = group.group if group.group != "variant" else f"variant:{group.variant_id}"
            if group.group == "system_control":
                message.skip_reason = SkipReason.SYSTEM_CONTROL
            elif group.group == "control":
                message.skip_reason = SkipReason.CONTROL
            elif skipped_of and pid in skipped_of:
                message.skip_reason = skipped_of[pid]
            elif group.variant_id not in by_id:
                # Shares adding up to less than 100 (campaign_validate refuses it): no variant, no message.
                counts["processed"] += 1
                counts["unassigned"] += 1
                continue
            elif group.variant_id in bad_specs:
                message.skip_reason, message.error = SkipReason.TEMPLATE_ERROR, bad_specs[group.variant_id]
                counts[f"variant:{group.variant_id}"] += 1
            elif pid in unreachable:
                message.skip_reason = unreachable[pid]
                counts[f"variant:{group.variant_id}"] += 1
            else:
                try:
                    rendered = variant_render(
                        channel=channel, content=by_id[group.variant_id].content, context=contexts[pid]
                    )
                    message.id = next(reserved)
                    message.items, item_urls = recommended_items(contexts[pid])
                    message.content = links_track(
                        channel=channel, content=rendered, message_id=message.id, project_id=project_id,
                        item_urls=item_urls,
                    )  # fmt: skip
                except RenderError as exc:
                    message.skip_reason, message.error = SkipReason.TEMPLATE_ERROR, str(exc)
                counts[f"variant:{group.variant_id}"] += 1
            messages.append(message)
        # send_now: the due messages are inserted claimed (the rules applied in this
        # transaction) and sent by this task once it commits, rather than by send
        # tasks that claim them with an UPDATE of every row: one write of each
        # message fewer and no trip through the broker (docs/benchmarks.md, issue 14).
        result = messages_enqueue(
            project_id=project_id,
            messages=messages,
            throttle_per_minute=campaign.throttle_per_minute,
            now=now,
            send_now=True,
        )
        if result.created != len(messages):
            # Impossible under the chunk lock unless another path enqueued these keys.
            logger.warning("run %s: %d of %d keys were enqueued elsewhere", run.pk, result.duplicates, len(messages))
        for m in messages:
            counts["processed"] += 1
            counts["targeted"] += 1
            counts[str(m.skip_reason) if m.skip_reason else "enqueued"] += 1
        run_counts_add(run_id=run.pk, counts=counts)
    return dict(counts)


def _goes_now(*, due: datetime | None, cutoff: timedelta | None, run: CampaignRun, now: datetime) -> bool:
    """Whether a message of the chunk is claimed at once: due now, and not past
    its cutoff (that skip is the claim's, and comes first)."""
    if due is not None and due > now:
        return False
    cutoff_at = (due or now) + cutoff if cutoff else run.cutoff_at
    return cutoff_at is None or now <= cutoff_at


def recommended_items(context: Mapping[str, Any]) -> tuple[list[str], dict[str, tuple[str, int]]]:
    """The product ids a rendered message carries in slot order (slot = index + 1),
    and each one's URL -> (product id, slot) for its tracked link: from the
    context's `recommendations` (campaigns.sending.context), [] when the
    templates used none. A URL shared by two slots names the first."""
    picks = context.get("recommendations") or []
    items = [str(p["id"]) for p in picks]
    urls: dict[str, tuple[str, int]] = {}
    for slot, p in enumerate(picks, start=1):
        if p.get("url"):
            urls.setdefault(p["url"], (str(p["id"]), slot))
    return items, urls


def profiles_send_chunk(*, run_id: int, profile_ids: Sequence[int]) -> dict[str, int]:
    """The chunk task's work: profiles_send for a planned chunk of the run, then
    the run's completion check. A paused campaign still sends the chunks already
    planned (pausing stops planning); a cancelled one sends none."""
    run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
    campaign = run.campaign
    if campaign.status == CampaignStatus.CANCELLED or run.status == RunStatus.CANCELLED:
        return {}
    from campaigns.sending.schedule import MessageTimes, run_message_times

    if is_winner_run(run):
        # An A/B winner goes when decided: the test run's local times have passed.
        times = MessageTimes()
    else:
        times = run_message_times(campaign=campaign, run=run, profile_ids=profile_ids)
    counts = profiles_send(
        campaign=campaign,
        run=run,
        profile_ids=profile_ids,
        not_before=times.not_before,
        not_before_of=times.not_before_of,
        skipped_of=times.skipped_of,
    )
    if counts:
        run_finish_if_complete(run_id=run_id)
    return counts
