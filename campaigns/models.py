"""Campaigns: segments (audiences), campaigns with variants and their runs, and the
in-app message answered to "App Launched"."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from campaigns.templating import template_compile
from crm.models import Project

DEFAULT_INAPP_TEMPLATE = """<div class="engage-inapp">
  <h3>{% if user.first_name %}{{ user.first_name }}, p{% else %}P{% endif %}icked for you</h3>
  <ul>
  {% for p in products %}
    <li><a href="{{ p.deeplink }}"><img src="{{ p.image_url }}" alt=""> {{ p.name }} {{ p.price }}</a></li>
  {% endfor %}
  </ul>
</div>"""


def validate_liquid(source: str) -> None:
    try:
        template_compile(source)
    except Exception as exc:  # noqa: BLE001 - any Liquid error is a bad template
        raise ValidationError(f"Liquid template error: {exc}") from exc


class InAppMessage(models.Model):
    """A message shown inside the app when it is launched, rendered per user from
    a Liquid template with the user's profile and top recommendations."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="inapp_messages")
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    # The highest priority active message whose caps allow it is shown.
    priority = models.IntegerField(default=0)
    template = models.TextField(default=DEFAULT_INAPP_TEMPLATE, validators=[validate_liquid])
    products_count = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    category = models.CharField(
        max_length=255, blank=True, default="", help_text="Recommend only from this category (blank: any)."
    )
    in_stock_only = models.BooleanField(default=True)
    # Frequency caps per user; 0 means no cap.
    max_per_session = models.PositiveIntegerField(default=1)
    max_per_day = models.PositiveIntegerField(default=3)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]
        indexes = [
            # The collector's read on every App Launched: a project's active messages.
            models.Index(fields=["project", "is_active"], name="inapp_project_active"),
        ]

    def __str__(self) -> str:
        return self.name


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
