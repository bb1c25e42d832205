"""Campaigns. For now: the in-app message answered to "App Launched"."""

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
