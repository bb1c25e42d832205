"""The delivery service's tables: one row per message, and each project's
delivery rules (caps, quiet hours) and provider settings per channel.

The app knows nothing of campaigns: a caller (a campaign run, a journey, a
transactional send) hands it rendered messages with an idempotency key, and
reads back what happened to them by `source`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone

from crm.models import Profile, Project


class ChannelName(models.TextChoices):
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    WEBHOOK = "webhook"
    # Shown inside the app (the collector's answer to "App Launched"): recorded as
    # sent when shown; no provider and no send task (campaigns.channels.inapp).
    IN_APP = "in_app", "in-app"


class MessageState(models.TextChoices):
    QUEUED = "queued"
    CLAIMED = "claimed"  # a worker is sending it (or died doing so: the sweeper)
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class SkipReason(models.TextChoices):
    """Why a message was not sent (skipped) or why it failed. Every message
    that is neither sent nor pending has one."""

    CONTROL = "control"
    SYSTEM_CONTROL = "system_control"
    CAPPED = "capped"
    QUIET_HOURS = "quiet_hours"
    CUTOFF_PASSED = "cutoff_passed"
    UNSUBSCRIBED = "unsubscribed"
    NO_ADDRESS = "no_address"
    INVALID_TOKEN = "invalid_token"
    TEMPLATE_ERROR = "template_error"
    PROVIDER_REJECTED = "provider_rejected"
    # Failed: temporary errors on every one of DELIVERY_MAX_ATTEMPTS attempts.
    RETRIES_EXHAUSTED = "retries_exhausted"
    # Failed: the project has no enabled provider settings for the channel.
    CHANNEL_NOT_CONFIGURED = "channel_not_configured"
    # Skipped: its sender cancelled it before it was sent (a cancelled campaign).
    CANCELLED = "cancelled"


class QuietHoursPolicy(models.TextChoices):
    DISCARD = "discard", "discard (skip the message)"
    DELAY = "delay", "delay until quiet hours end"


# States whose rows count towards frequency caps, the minimum gap and throttles:
# sent, and claimed (being sent now by another worker, or just claimed by us).
COUNTED_STATES = (MessageState.CLAIMED, MessageState.SENT)


class Message(models.Model):
    """One message to one profile on one channel, inserted before any provider
    call. `idempotency_key` (source, occurrence, profile, channel, e.g.
    "campaign:12:run:3:profile:99:email") is unique per project, so a re-run of
    the same fan-out inserts nothing twice, and it is the provider's idempotency
    header where the protocol has one.

    `to` is resolved when the message is claimed for sending, not at enqueue
    (unless the caller gives one, e.g. a webhook URL): a message may wait hours
    (quiet hours, a delay, backoff), and the address to use is the one the
    profile has then: a changed email, a new push token, a token cleared as dead
    meanwhile. The row then records the address actually used."""

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes on the foreign keys: the indexes below lead with them.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+", db_index=False)
    channel = models.CharField(max_length=16, choices=ChannelName.choices)
    idempotency_key = models.CharField(max_length=255)
    # Who sent it, for results and throttles: "campaign:12", "journey:4".
    source = models.CharField(max_length=255, blank=True, default="")
    # The sender's label of this row, handed back in every Outcome ("variant:5").
    label = models.CharField(max_length=64, blank=True, default="")
    # The products the message carries, in slot order (slot = index + 1): per-product
    # results, and the product and slot a tracked recommendation link names.
    items = models.JSONField(default=list, blank=True)
    content = models.JSONField(default=dict, blank=True)
    to = models.CharField(max_length=4096, blank=True, default="")
    state = models.CharField(max_length=8, choices=MessageState.choices, default=MessageState.QUEUED)
    skip_reason = models.CharField(max_length=32, choices=SkipReason.choices, blank=True, default="")
    # Marketing messages respect subscriptions, caps and quiet hours; transactional ones do not.
    marketing = models.BooleanField(default=True)
    # "" = the project's DeliverySettings.quiet_hours_policy.
    quiet_hours_policy = models.CharField(max_length=8, choices=QuietHoursPolicy.choices, blank=True, default="")
    # At most this many messages of `source` a minute (enforced at claim); null = no throttle.
    throttle_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # Not sent before this instant (a delay, the end of quiet hours, a retry's backoff, a throttle).
    not_before = models.DateTimeField(default=dj_timezone.now)
    # Not sent at all after this instant: skipped cutoff_passed.
    cutoff_at = models.DateTimeField(null=True, blank=True)
    # When a send task was last handed to the broker for this row (null: none is
    # pending, the sweeper dispatches it once due).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The claiming batch's token (host:pid:random): a late record of a batch
    # whose rows the sweeper handed to another worker is ignored.
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=dj_timezone.now)
    # Set once, by a conditional UPDATE (... WHERE opened_at IS NULL): the first
    # receipt of each kind is told as an Outcome, a repeat is stored but not counted.
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # messages_enqueue's INSERT ... ON CONFLICT (project_id, idempotency_key) DO NOTHING.
            models.UniqueConstraint(fields=["project", "idempotency_key"], name="message_idempotency_key_unique")
        ]
        indexes = [
            # Frequency caps and the minimum gap, counted inside the claim:
            # profile_id = ANY(...) AND channel = ? AND state IN ('claimed', 'sent')
            # AND claimed_at >= ?. Partial: queued, skipped and failed rows never count.
            models.Index(
                fields=["profile", "channel", "claimed_at"],
                condition=Q(state__in=["claimed", "sent"]),
                name="message_cap_counts",
            ),
            # The sweeper's dispatch of due rows: state = 'queued' AND not_before <= now.
            models.Index(fields=["not_before"], condition=Q(state="queued"), name="message_queued_due"),
            # The sweeper's release of stale claims: state = 'claimed' AND claimed_at < now - timeout.
            models.Index(fields=["claimed_at"], condition=Q(state="claimed"), name="message_claimed_stale"),
            # Throttles at claim (project, source, claimed_at in the last minute, counted
            # states), results of a source, and the console's "why did user X not get
            # source Y" (project, source, profile rows by the profile filter on few rows).
            models.Index(fields=["project", "source", "claimed_at"], name="message_source_claimed"),
            # The console's messages of one profile, newest first (profile page, "why").
            models.Index(fields=["profile", "-id"], name="message_profile_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} to profile {self.profile_id} ({self.state})"


class MessageEvent(models.Model):
    """A receipt or an engagement of a message, stored once: a provider's event
    (SendGrid's event webhook, Twilio's status callback), an open, a click.
    `dedupe_key` is the provider's event id (sg_event_id; MessageSid:status) or
    ours ("open", "click:<slot or link hash>"), unique per message, so a
    provider retrying its webhook or a user clicking twice stores nothing twice."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    # No index of its own: the unique constraint below leads with it.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=16)  # delivery.outcomes.OutcomeKind
    dedupe_key = models.CharField(max_length=255)
    at = models.DateTimeField()
    # The provider's payload (trimmed), the clicked URL, product and slot.
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "dedupe_key"], name="message_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of message {self.message_id}"


# The channels caps count: the sent ones. In-app messages are recorded when shown,
# never claimed, so a cap on them would count nothing (in-app campaigns have their
# own per-session and per-day caps).
CAPPED_CHANNELS = tuple(c for c in ChannelName.values if c != ChannelName.IN_APP)


def caps_problem(caps: Any) -> str | None:
    """What is wrong with a caps value, naming where; None when it is good:
    {"push": [{"max": 3, "days": 7}], "email": [{"max": 1, "hours": 24}]}."""
    if not isinstance(caps, dict):
        return 'must be an object of channel → rules, e.g. {"push": [{"max": 3, "days": 7}]}'
    for channel, rules in caps.items():
        if channel not in CAPPED_CHANNELS:
            return f"{channel!r} is not a channel (expected one of {', '.join(CAPPED_CHANNELS)})"
        if not isinstance(rules, list):
            return f"{channel}: must be a list of rules"
        for i, rule in enumerate(rules):
            where = f"{channel}[{i}]"
            if not isinstance(rule, dict):
                return f'{where}: must be an object such as {{"max": 3, "days": 7}}'
            unknown = set(rule) - {"max", "days", "hours"}
            if unknown:
                return f"{where}: unknown key {sorted(unknown)[0]!r} (expected max, and days or hours)"
            maximum = rule.get("max")
            if type(maximum) is not int or maximum < 1:
                return f"{where}.max: must be a whole number of at least 1"
            windows = [k for k in ("days", "hours") if k in rule]
            if len(windows) != 1:
                return f"{where}: give exactly one window, days or hours"
            value = rule[windows[0]]
            if type(value) is not int or not 1 <= value <= 366 * 24:
                return f"{where}.{windows[0]}: must be a whole number from 1"
    return None


def cap_window_seconds(rule: dict[str, int]) -> int:
    return rule["days"] * 86400 if "days" in rule else rule["hours"] * 3600


class DeliverySettings(models.Model):
    """A project's delivery rules; a project without a row has no caps, no quiet
    hours and the delay policy (delivery.selectors.delivery_settings_get)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    # Per channel, across all sources: {"push": [{"max": 3, "days": 7}], "email": [{"max": 1, "days": 1}]}.
    caps = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per channel: at most "max" messages in a window of "days" or "hours", e.g. '
        '{"push": [{"max": 3, "days": 7}], "email": [{"max": 1, "days": 1}]}. Marketing messages only.',
    )
    min_gap_seconds = models.PositiveIntegerField(
        default=0, help_text="Minimum time between two marketing messages on one channel to one user (0: none)."
    )
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="Local time (the user's time zone, else the project's), e.g. 22:00."
    )
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="Local time, e.g. 08:00.")
    quiet_hours_policy = models.CharField(
        max_length=8,
        choices=QuietHoursPolicy.choices,
        default=QuietHoursPolicy.DELAY,
        help_text="What a message that falls in quiet hours does, unless its sender chose.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "delivery settings"

    def __str__(self) -> str:
        return f"Delivery settings of project {self.project_id}"

    def clean(self) -> None:
        problem = caps_problem(self.caps)
        if problem:
            raise ValidationError({"caps": problem})
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            field = "quiet_hours_end" if self.quiet_hours_end is None else "quiet_hours_start"
            raise ValidationError({field: "set both the start and the end of quiet hours, or neither"})
        if self.quiet_hours_start is not None and self.quiet_hours_start == self.quiet_hours_end:
            raise ValidationError({"quiet_hours_end": "must differ from the start"})


class ChannelSettings(models.Model):
    """A project's provider settings for one channel, validated by the
    channel's settings_validate; secrets are never shown back (settings_public)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    channel = models.CharField(max_length=16, choices=ChannelName.choices)
    settings = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "channel settings"
        constraints = [
            # Also serves the sender's "settings of (project, channel)" read.
            models.UniqueConstraint(fields=["project", "channel"], name="channel_settings_unique")
        ]

    def __str__(self) -> str:
        return f"{self.channel} settings of project {self.project_id}"
