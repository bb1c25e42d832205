"""Campaigns: segments (audiences), campaigns with variants and their runs (on every
channel, in-app included: campaigns.channels.inapp), and the pending triggers of
triggered campaigns."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone as dj_timezone

from campaigns.templating import template_compile
from crm.models import Project


def validate_liquid(source: str) -> None:
    try:
        template_compile(source)
    except Exception as exc:  # noqa: BLE001 - any Liquid error is a bad template
        raise ValidationError(f"Liquid template error: {exc}") from exc


class SegmentStatus(models.TextChoices):
    PENDING = "pending"  # saved, full computation queued
    COMPUTING = "computing"
    READY = "ready"
    FAILED = "failed"


class Segment(models.Model):
    """An audience: a tree of conditions over a project's profiles, devices and
    events (the grammar and its SQL live in campaigns.segments.rules / .compiler).

    Its members are stored (SegmentMembership) and kept current as events
    arrive and as time passes (campaigns.segments.membership); editing the rules
    recomputes them in the background. `rules_version` counts edits, so a full
    computation started for older rules knows it is stale and stops."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    rules = models.JSONField(default=dict)
    rules_version = models.PositiveIntegerField(default=1, editable=False)
    # What the rules read, derived from them on save (campaigns.segments.rules.rules_dependencies),
    # so the ingest hook decides which segments a batch touches without parsing rules.
    dependencies = models.JSONField(default=dict, blank=True, editable=False)
    status = models.CharField(max_length=10, choices=SegmentStatus.choices, default=SegmentStatus.PENDING)
    # 0..1 while a full computation runs.
    progress = models.FloatField(default=0.0)
    member_count = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    # Up to when the periodic time-boundary refresh has re-evaluated this segment.
    time_checked_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        indexes = [models.Index(fields=["project", "name"], name="segment_project_name")]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """A profile currently in a segment. Campaigns and journeys read members by
    (segment, profile id) ranges; leaving deletes the row (SegmentChange keeps history)."""

    id = models.BigAutoField(primary_key=True)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    profile = models.ForeignKey("crm.Profile", on_delete=models.CASCADE, related_name="segment_memberships")
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Serves the members of a segment in profile-id order (members API, fan-out
            # chunks by profile id range) and the membership diff of every refresh.
            models.UniqueConstraint(fields=["segment", "profile"], name="segment_membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.profile_id} in {self.segment_id}"


class SegmentChange(models.Model):
    """A profile entering or leaving a segment, in order: journeys start on entry."""

    id = models.BigAutoField(primary_key=True)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes", db_index=False)
    profile = models.ForeignKey("crm.Profile", on_delete=models.CASCADE, related_name="+", db_index=False)
    entered = models.BooleanField()
    at = models.DateTimeField()

    class Meta:
        indexes = [
            # "Who entered segment S since T" (journeys) and the profile page's history.
            models.Index(fields=["segment", "at"], name="segment_change_segment_at"),
            models.Index(fields=["profile", "at"], name="segment_change_profile_at"),
        ]

    def __str__(self) -> str:
        return f"{self.profile_id} {'entered' if self.entered else 'left'} {self.segment_id}"


class SegmentSize(models.Model):
    """A segment's member count at a time: the console's chart of size over time."""

    id = models.BigAutoField(primary_key=True)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes", db_index=False)
    at = models.DateTimeField()
    members = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["segment", "at"], name="segment_size_segment_at")]

    def __str__(self) -> str:
        return f"{self.segment_id}: {self.members} at {self.at:%Y-%m-%d %H:%M}"


# --- Campaigns (issue 14) ------------------------------------------------------------
# A campaign decides who gets what (audience, control groups, variants, templates,
# schedule); the delivery service (delivery/) sends what it is handed and knows
# nothing of campaigns. The runs, fan-out and rendering are in campaigns/sending/.


class CampaignChannel(models.TextChoices):
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    WEBHOOK = "webhook"
    IN_APP = "in_app", "in-app"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft"  # being built; nothing is sent
    SCHEDULED = "scheduled"  # started: waits for its time, its recurrence or its trigger
    RUNNING = "running"  # a run is fanning out
    PAUSED = "paused"  # no new run starts and a running fan-out stops planning chunks
    COMPLETED = "completed"  # a one-off campaign whose run finished
    CANCELLED = "cancelled"


class ScheduleKind(models.TextChoices):
    NOW = "now", "send now"
    AT = "at", "at a date and time"
    RECURRING = "recurring"
    TRIGGERED = "triggered", "triggered by an event"


class ScheduleTimezone(models.TextChoices):
    PROJECT = "project", "the project's time zone"
    USER = "user", "each user's own time zone"


class PastTimePolicy(models.TextChoices):
    """A per-user-time-zone send whose local time has already passed for a user
    when the run starts."""

    SKIP = "skip", "skip if already past"
    NEXT_DAY = "next_day", "send the next day"


class Recurrence(models.TextChoices):
    DAILY = "daily"
    WEEKLY = "weekly"


class ABMetric(models.TextChoices):
    OPEN_RATE = "open_rate", "open rate"
    CLICK_RATE = "click_rate", "click rate"
    CONVERSION_RATE = "conversion_rate", "conversion rate"


class ABFallback(models.TextChoices):
    KEEP_SPLIT = "keep_split", "keep the split"
    FIRST_VARIANT = "first_variant", "send the first variant"


class Campaign(models.Model):
    """A message to an audience on one channel, in one or more variants.

    Audience: `segment`'s members, or (null) every profile reachable on the
    channel. Control: `control_percent` of the audience is held out (recorded as
    messages skipped `control`); the project's system control group
    (CampaignSettings.system_control_percent) is never reached by any campaign.
    Assignment to control and variants is a stable hash of (campaign, profile)
    (campaigns.segments.buckets.profile_bucket with the salt "campaign:<id>"), so a
    re-run assigns the same way.

    Schedule: `schedule_kind` with its fields (send_date / send_time /
    schedule_timezone / past_time_policy for "at"; recurrence / send_time /
    weekdays for "recurring", as a django-celery-beat entry; trigger_event /
    trigger_delay_seconds / cancel_event for "triggered"). `cutoff_minutes`: a
    message not sent within this long of its planned time is skipped
    `cutoff_passed`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=CampaignChannel.choices)
    segment = models.ForeignKey(
        Segment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        help_text="Blank: everyone reachable on the channel.",
    )
    status = models.CharField(max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    # Marketing campaigns respect subscriptions, caps and quiet hours; transactional ones do not.
    marketing = models.BooleanField(default=True)
    control_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(50)],
        help_text="Share of the audience held out as this campaign's control group (0-50 %).",
    )

    schedule_kind = models.CharField(max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.NOW)
    send_date = models.DateField(null=True, blank=True, help_text='"At": the local date.')
    send_time = models.TimeField(null=True, blank=True, help_text='"At" and recurring: the local time.')
    schedule_timezone = models.CharField(
        max_length=8, choices=ScheduleTimezone.choices, default=ScheduleTimezone.PROJECT
    )
    past_time_policy = models.CharField(max_length=8, choices=PastTimePolicy.choices, default=PastTimePolicy.SKIP)
    recurrence = models.CharField(max_length=8, choices=Recurrence.choices, blank=True, default="")
    # Weekly recurrences: ISO weekdays 1 (Monday) .. 7 (Sunday).
    weekdays = models.JSONField(default=list, blank=True)
    # The django-celery-beat entry of a recurring campaign (created on start).
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    trigger_event = models.CharField(max_length=255, blank=True, default="")
    trigger_delay_seconds = models.PositiveIntegerField(default=0)
    # Triggered with a delay: not sent if the profile did this after the trigger (abandoned cart).
    cancel_event = models.CharField(max_length=255, blank=True, default="")
    cutoff_minutes = models.PositiveIntegerField(null=True, blank=True)

    # Conversion goal (results, issue 15): this event within the window after the message.
    goal_event = models.CharField(max_length=255, blank=True, default="")
    goal_window_hours = models.PositiveIntegerField(default=72)

    # A/B test first (campaigns.results.decision): 0 = every variant's share is sent
    # at once. Else `ab_test_percent` of the non-control audience gets the variants
    # by their shares, and `ab_decision_hours` after that run started the rule picks
    # the winner, which is sent to the rest (its own run, occurrence "<occ>:winner").
    ab_test_percent = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(90)], help_text="Share of the audience in the test (0: no test)."
    )
    ab_decision_hours = models.PositiveIntegerField(default=24)
    ab_metric = models.CharField(max_length=16, choices=ABMetric.choices, default=ABMetric.CLICK_RATE)
    ab_confidence = models.PositiveSmallIntegerField(
        default=95, validators=[MinValueValidator(50), MaxValueValidator(99)], help_text="Percent."
    )
    ab_min_sample = models.PositiveIntegerField(default=100, help_text="Messages per variant before any may win.")
    ab_fallback = models.CharField(max_length=16, choices=ABFallback.choices, default=ABFallback.KEEP_SPLIT)

    # "" = the project's delivery setting (delivery.models.QuietHoursPolicy).
    quiet_hours_policy = models.CharField(max_length=8, blank=True, default="")
    throttle_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # In-app: the highest priority campaign within its caps is shown; caps per user (0: none).
    priority = models.IntegerField(default=0)
    max_per_session = models.PositiveIntegerField(default=1)
    max_per_day = models.PositiveIntegerField(default=3)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "-created_at"]
        indexes = [
            # The console's list and the triggered / in-app lookups of a project's live campaigns.
            models.Index(fields=["project", "status"], name="campaign_project_status"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def source(self) -> str:
        """The delivery service's `source` of this campaign's messages."""
        return f"campaign:{self.pk}"


class Variant(models.Model):
    """One version of a campaign's message: a template per channel field and a
    share of the (non-control) audience.

    `content` holds the channel's Liquid templates: push {title, body, image,
    deeplink, data}, email {subject, html, text, from_email, from_name,
    reply_to}, sms {text}, webhook {url, body}, in_app {html}.
    `recommendations` configures the `recommendations` the templates see:
    {"limit": 3, "category": "", "in_stock": true, "min_price": null,
    "max_price": null, "properties": {}, "exclude": []}."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=100, default="A")
    # Percent of the non-control audience; a campaign's shares add up to 100.
    share = models.PositiveSmallIntegerField(default=100, validators=[MinValueValidator(0), MaxValueValidator(100)])
    content = models.JSONField(default=dict, blank=True)
    recommendations = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["campaign", "id"]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.name}"


class RunStatus(models.TextChoices):
    PLANNING = "planning"  # chunks being planned and fanned out
    DONE = "done"  # every chunk enqueued its messages
    CANCELLED = "cancelled"
    FAILED = "failed"


class CampaignRun(models.Model):
    """One occurrence of a campaign: a send now, an "at" time, one recurrence.
    (Triggered campaigns have one run per trigger event, keyed by its message id.)

    `occurrence` names it in every message's idempotency key
    (campaign:<id>:<occurrence>:profile:<id>:<channel>), unique per campaign, so
    starting the same occurrence twice sends nothing twice. The fan-out walks
    the audience in profile-id ranges; `planned_through` is the last profile id
    whose messages are enqueued, so a crashed planner resumes there."""

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    occurrence = models.CharField(max_length=128)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PLANNING)
    planned_at = models.DateTimeField(help_text="When its messages are due (per user: the UTC instant of the first).")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cutoff_at = models.DateTimeField(null=True, blank=True)
    planned_through = models.BigIntegerField(default=0)
    # When the planner found the end of the audience: the run is done once every
    # planned id was handled by a chunk (counts "processed" + "gone" = "planned").
    planning_finished_at = models.DateTimeField(null=True, blank=True)
    # Counts of the fan-out: targeted, control, system_control, enqueued, template_error ...
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "occurrence"], name="campaign_run_occurrence_unique")
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}:{self.occurrence}"


class CampaignSettings(models.Model):
    """A project's campaign-wide settings; a project without a row has no system
    control group (campaigns.sending selectors read the default)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    system_control_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="A stable share of the project's profiles (0-10 %) that no campaign reaches, "
        "for measuring the overall lift of messaging.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "campaign settings"

    def __str__(self) -> str:
        return f"Campaign settings of project {self.project_id}"


# --- Triggered campaigns (campaigns.sending.triggers) --------------------------------


class TriggerState(models.TextChoices):
    PENDING = "pending"  # waiting for its delay (or for a paused campaign to resume)
    SENT = "sent"  # handed to the campaign's sending: its message is enqueued (or recorded skipped)
    CANCELLED = "cancelled"  # the cancelling event happened after it, or the campaign was cancelled
    SKIPPED = "skipped"  # its cutoff passed before it could go
    FAILED = "failed"  # sending it raised (the error is kept); never retried


class CampaignTrigger(models.Model):
    """One event that triggers a triggered campaign for its profile, written by
    the ingest workers' stored-events hook inside the batch's transaction, so a
    redelivered batch writes nothing twice (and unique on (campaign, event
    message id) besides). It waits here, not as a broker ETA, until `due_at`
    (the event's time + the campaign's delay); the beat task then sends the due
    ones after checking the cancelling event (campaigns.sending.triggers)."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    # No index of its own: the unique constraint below leads with it.
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="triggers", db_index=False)
    # Indexed (the default): a profile deleted by a merge cascades here by profile id.
    profile = models.ForeignKey("crm.Profile", on_delete=models.CASCADE, related_name="+")
    event_message_id = models.CharField(max_length=255)
    # The canonical name (after the project's event-name mappings), as the templates see it.
    event_name = models.CharField(max_length=255)
    event_properties = models.JSONField(default=dict, blank=True)
    event_timestamp = models.DateTimeField()
    due_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=TriggerState.choices, default=TriggerState.PENDING)
    # Why it was cancelled, skipped or failed (also on its skipped message).
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The hook's INSERT ... ON CONFLICT DO NOTHING: one trigger per event and campaign.
            models.UniqueConstraint(fields=["campaign", "event_message_id"], name="campaign_trigger_event_unique")
        ]
        indexes = [
            # The beat task's due scan: state = 'pending' AND due_at <= now ORDER BY due_at.
            models.Index(fields=["due_at"], condition=models.Q(state="pending"), name="campaign_trigger_due"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}: {self.event_name} of profile {self.profile_id} ({self.state})"


# --- Results (campaigns.results) --------------------------------------------------
# Counters kept as the outcomes and events arrive (delivery.outcomes listeners and
# the ingest workers' stored-events hook), so a report reads a few hundred rows
# whatever the campaign's size. A `group` is "variant:<id>", "control" or
# "system_control".


class CampaignStat(models.Model):
    """One counter of a campaign: (group, UTC day, metric) -> count (and amount,
    the revenue of "converted" / "revenue"). Metrics: targeted, sent, failed,
    delivered, bounced, opened, clicked, converted, unsubscribed, and
    skipped:<reason> per skip reason. Added to by INSERT ... ON CONFLICT DO UPDATE,
    one statement per batch."""

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="stats", db_index=False)
    group = models.CharField(max_length=32)
    day = models.DateField()
    metric = models.CharField(max_length=48)
    count = models.BigIntegerField(default=0)
    amount = models.DecimalField(max_digits=20, decimal_places=4, default=0)

    class Meta:
        constraints = [
            # Also serves the report's read of one campaign's counters.
            models.UniqueConstraint(fields=["campaign", "group", "day", "metric"], name="campaign_stat_unique")
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.group} {self.day} {self.metric}={self.count}"


class CampaignProductStat(models.Model):
    """Per campaign, group, product and slot: sent, clicked, converted, revenue."""

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="product_stats", db_index=False)
    group = models.CharField(max_length=32)
    product_id = models.CharField(max_length=255)
    slot = models.PositiveSmallIntegerField()
    sent = models.BigIntegerField(default=0)
    clicked = models.BigIntegerField(default=0)
    converted = models.BigIntegerField(default=0)
    revenue = models.DecimalField(max_digits=20, decimal_places=4, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "group", "product_id", "slot"], name="campaign_product_stat_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.group} {self.product_id}#{self.slot}"


class CampaignConversion(models.Model):
    """A goal event attributed to a campaign's message (or held-out row), once per
    (campaign, event): last touch across campaigns, within the goal window."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="conversions", db_index=False)
    group = models.CharField(max_length=32)
    # Plain ids: the delivery row and the profile may be deleted (merges) without losing the figure.
    message_id = models.BigIntegerField()
    profile_id = models.BigIntegerField()
    event_message_id = models.CharField(max_length=255)
    product_id = models.CharField(max_length=255, blank=True, default="")
    revenue = models.DecimalField(max_digits=20, decimal_places=4, default=0)
    # Whether this is the message's first conversion (the conversion rate counts those).
    first = models.BooleanField(default=True)
    converted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "event_message_id"], name="campaign_conversion_once"),
        ]
        indexes = [models.Index(fields=["message_id"], name="campaign_conversion_message")]

    def __str__(self) -> str:
        return f"{self.campaign_id}: {self.event_message_id}"


class CampaignNewView(models.Model):
    """A product first viewed by someone of a group after their message (within the
    goal window): diversity is the count of these rows per 1,000 profiles of the group."""

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+", db_index=False)
    group = models.CharField(max_length=32)
    product_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "group", "product_id"], name="campaign_new_view_unique")
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.group}: {self.product_id}"


class ABDecision(models.Model):
    """The A/B decision of a campaign: the rule as it was, the figures it saw, the
    winner (null: none qualified, the fallback applied) and who decided (the rule,
    or a marketer's override, which adds a row)."""

    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="decisions")
    winner = models.ForeignKey(Variant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    rule = models.JSONField(default=dict)  # metric, confidence, min_sample, fallback
    figures = models.JSONField(default=dict)  # per variant: n, successes, rate, interval, p-value vs the best
    outcome = models.CharField(max_length=32)  # "winner", "fallback:keep_split", "fallback:first_variant", "override"
    decided_by = models.CharField(max_length=150, default="rule")  # "rule" or the user's name
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["campaign", "-decided_at"]

    def __str__(self) -> str:
        return f"{self.campaign_id}: {self.outcome}"
