"""The data store: projects (tenants), their members, profiles, devices and events."""

from __future__ import annotations

import hashlib
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone

from crm.vocabulary import CanonicalEvent

RECENT_ITEMS_LIMIT = 10


def key_digest(raw_key: str) -> str:
    """Keys are stored only as their SHA-256: a database leak does not leak keys.

    SHA-256 (not a slow password hash) is right here: keys are 32 random bytes,
    so there is nothing to brute-force, and the collector checks one per request.
    """
    return hashlib.sha256(raw_key.encode()).hexdigest()


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone")


class Project(models.Model):
    """The tenant. Every other model carries its project."""

    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    # Public key for apps and SDKs: may only send events.
    write_key_prefix = models.CharField(max_length=12, editable=False)
    write_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # Private key for server-side API calls.
    secret_key_prefix = models.CharField(max_length=12, editable=False)
    secret_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    keys_rotated_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    # Requests per window of RATE_LIMIT_WRITE_KEY / RATE_LIMIT_SECRET_KEY for this
    # project's keys; empty: those settings' numbers (crm.rate_limits).
    rate_limit_write_key = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Collector requests allowed per rate-limit window (RATE_LIMIT_WRITE_KEY); empty: the default.",
    )
    rate_limit_secret_key = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="API requests allowed per rate-limit window (RATE_LIMIT_SECRET_KEY); empty: the default.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A staff user's access to one project's data in the console."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project}"


class Gender(models.TextChoices):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = ""


class Profile(models.Model):
    """One end user of a project's app, identified or anonymous.

    The ingest workers update a profile row for nearly every event (recent
    items): on PostgreSQL the table keeps a fifth of each page free
    (fillfactor, migration crm 0003) so that those updates stay on the page
    and skip the indexes (HOT), and no index covers a column they change
    often (last_seen moves in steps, see crm.services.LAST_SEEN_STEP)."""

    # No single-column index: the indexes below lead with the project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="profiles", db_index=False)
    # The customer's own id; null while the user is anonymous.
    user_id = models.CharField(max_length=255, null=True, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    email = models.EmailField(max_length=254, blank=True, default="")
    phone = models.CharField(max_length=32, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    gender = models.CharField(max_length=8, choices=Gender.choices, blank=True, default="")
    birth_date = models.DateField(null=True, blank=True)
    locale = models.CharField(max_length=35, blank=True, default="")
    country = models.CharField(max_length=64, blank=True, default="")
    city = models.CharField(max_length=128, blank=True, default="")
    timezone = models.CharField(max_length=64, blank=True, default="")
    first_seen = models.DateTimeField(default=dj_timezone.now)
    last_seen = models.DateTimeField(default=dj_timezone.now)
    # Product ids, newest first, at most RECENT_ITEMS_LIMIT each: read on every
    # recommendation request, so they live on the row rather than in a join.
    recent_viewed = models.JSONField(default=list, blank=True)
    recent_purchased = models.JSONField(default=list, blank=True)
    # Per-channel subscription: None = never asked, True = subscribed, False = opted out.
    email_subscribed = models.BooleanField(null=True, blank=True)
    push_subscribed = models.BooleanField(null=True, blank=True)
    sms_subscribed = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user_id"],
                condition=Q(user_id__isnull=False),
                name="profile_user_id_unique_per_project",
            )
        ]
        indexes = [
            # Console search by email within a project.
            models.Index(fields=["project", "email"], name="profile_project_email"),
            # Segments on recency ("seen in the last 7 days").
            models.Index(fields=["project", "last_seen"], name="profile_project_last_seen"),
        ]

    def __str__(self) -> str:
        return self.user_id or f"anonymous #{self.pk}"


class AnonymousId(models.Model):
    """An anonymous id (SDK-generated, before login) that resolves to a profile.

    A table rather than a list on the profile so that the collector's lookup
    "which profile has this anonymousId" is one unique-index probe on any database.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="anonymous_ids")
    anonymous_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "anonymous_id"], name="anonymous_id_unique_per_project")
        ]

    def __str__(self) -> str:
        return self.anonymous_id


class Platform(models.TextChoices):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"
    OTHER = "other"


class Device(models.Model):
    """An app installation (push token); updated in place like Profile (fillfactor)."""

    # No single-column index: device_id_unique_per_project leads with the project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="devices", db_index=False)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="devices")
    device_id = models.CharField(max_length=255)
    platform = models.CharField(max_length=8, choices=Platform.choices, default=Platform.OTHER)
    push_token = models.CharField(max_length=4096, blank=True, default="")
    app_version = models.CharField(max_length=64, blank=True, default="")
    os_name = models.CharField(max_length=64, blank=True, default="")
    os_version = models.CharField(max_length=64, blank=True, default="")
    last_seen = models.DateTimeField(default=dj_timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "device_id"], name="device_id_unique_per_project")]

    def __str__(self) -> str:
        return f"{self.platform}:{self.device_id}"


class EventType(models.TextChoices):
    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


class Event(models.Model):
    """An immutable fact: what a profile did, when."""

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes on the foreign keys: the indexes below lead with
    # them and serve every lookup by project or by profile. Each index is paid on
    # every ingested event.
    # No foreign-key constraints in the database either (db_constraint=False):
    # their checks at commit cost a row lock on the profile per event, about a
    # fifth of PostgreSQL's work per ingested event. The ingest path checks
    # instead, once per profile per batch: it locks every profile its new
    # events point to and rolls back when one is gone (a concurrent merge);
    # see crm.services.ProfilesGone. Deletes still cascade (Django does that).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    profile = models.ForeignKey(
        Profile, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    type = models.CharField(max_length=8, choices=EventType.choices, default=EventType.TRACK)
    name = models.CharField(max_length=255)
    properties = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    # Client time, corrected for the client's clock skew (see ingestion).
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField(default=dj_timezone.now)
    message_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            # Deduplicates SDK retries and redeliveries; also serves the
            # "already stored?" probe of the ingest worker.
            models.UniqueConstraint(fields=["project", "message_id"], name="event_message_id_unique_per_project")
        ]
        indexes = [
            # A profile's events by time: profile page, alias merges, campaign
            # conversion windows (profile_id = ? AND timestamp BETWEEN ...), and the
            # segment compiler's per-profile probes (EXISTS ... WHERE profile_id =
            # crm_profile.id AND project_id = ? AND name IN (...) AND timestamp >= ?),
            # which the included columns answer from the index alone, without a heap
            # visit per probe (bench/segments.py, docs/benchmarks.md).
            models.Index(fields=["profile", "timestamp"], include=["project", "name"], name="event_profile_time_names"),
            # Events by name and time within a project: segments ("did X in the
            # last N days") and the training collector (views/purchases by date range).
            # The included profile answers the segment compiler's semi- and anti-joins
            # (which profiles did / did not do X in the window) from the index alone:
            # at 5,000,000 events the "did not order" leg of the benchmark segment went
            # from 561 ms with a heap visit per event to 25-43 ms (docs/benchmarks.md).
            models.Index(
                fields=["project", "name", "timestamp"], include=["profile"], name="event_project_name_time_pid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class EventNameMapping(models.Model):
    """A project's own event name read as one of the canonical e-commerce events
    ("Viewed Item" -> "Product Viewed"; crm.vocabulary). The stored event keeps
    the name it was sent with; recent items, training and tracking read the
    mapping (crm.selectors.event_name_mappings)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source_name = models.CharField(max_length=255, help_text="The event name your app sends.")
    canonical_name = models.CharField(max_length=32, choices=CanonicalEvent.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "source_name"]
        constraints = [
            # Also serves the "mappings of project X" read of every ingest batch and training run.
            models.UniqueConstraint(fields=["project", "source_name"], name="event_name_mapping_unique")
        ]

    def __str__(self) -> str:
        return f"{self.source_name} → {self.canonical_name}"
