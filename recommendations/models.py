"""Model versions and what they serve: related products and trending products.

Serving (issue 6) reads RelatedProduct and TrendingProduct rows of the project's
ACTIVE version only. A version's rows are written completely before it can become
active, and activation is one UPDATE pair in a transaction, so a half-written run
is never visible; rows of retired and failed versions are deleted by the pipeline.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from crm.models import Project


class VersionStatus(models.TextChoices):
    COLLECTING = "collecting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    READY = "ready"
    ACTIVE = "active"
    FAILED = "failed"
    RETIRED = "retired"


RUNNING_STATUSES = (VersionStatus.COLLECTING, VersionStatus.TRAINING, VersionStatus.EVALUATING)


class VersionKind(models.TextChoices):
    FULL = "full", "Full training"
    ONLINE = "online", "Online update"


class ModelVersion(models.Model):
    """One training run and its result."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=8, choices=VersionKind.choices, default=VersionKind.FULL)
    # An online update starts from this version's model.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=12, choices=VersionStatus.choices, default=VersionStatus.COLLECTING)
    # Why a ready version was not activated automatically (waits for a marketer).
    held_reason = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # The data: interactions with timestamps in [data_from, data_to], events up to
    # last_event_id (the high-water mark the next online update starts after).
    data_from = models.DateTimeField(null=True, blank=True)
    data_to = models.DateTimeField(null=True, blank=True)
    last_event_id = models.BigIntegerField(default=0)
    interactions = models.BigIntegerField(default=0)
    users = models.BigIntegerField(default=0)
    products = models.BigIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    # Seconds per stage: {"collect": 12.3, "train": 80.1, ...}
    stage_seconds = models.JSONField(default=dict, blank=True)
    # HR@10 / NDCG@10 of the model and the baselines, coverage, eval users.
    metrics = models.JSONField(default=dict, blank=True)
    # Folder in default storage (recs/<project>/<version>/) with the training data
    # chunks, the model weights and the related-products file.
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.CharField(max_length=150, blank=True, default="")
    # Rows of old retired versions are deleted (RECS_KEEP_VERSIONS are kept for
    # rollback); such a version cannot be activated again.
    rows_purged = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one version serves a project: activation flips two rows in one
            # transaction, and a racing second activation fails instead of leaving two.
            models.UniqueConstraint(
                fields=["project"], condition=Q(status="active"), name="model_version_one_active_per_project"
            )
        ]
        indexes = [
            # "the active version of project P" on every serving read, and the
            # admin's per-project list.
            models.Index(fields=["project", "status"], name="model_version_project_status"),
        ]

    def __str__(self) -> str:
        return f"v{self.pk} ({self.kind}, {self.status})"

    @property
    def hr10(self) -> float | None:
        return (self.metrics or {}).get("model_hr10")


class RelatedProduct(models.Model):
    """The `rank`-th (1..20) related product of `product_id` in one model version.
    `score` is the model's probability of `related_product_id` given `product_id`,
    so the lists of a user's recent items can be summed."""

    id = models.BigAutoField(primary_key=True)
    # Unindexed: rows are found by version (the unique index below leads with it);
    # only a project's deletion looks them up by project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="related", db_index=False)
    product_id = models.CharField(max_length=255)
    related_product_id = models.CharField(max_length=255)
    rank = models.PositiveSmallIntegerField()
    score = models.FloatField()

    class Meta:
        constraints = [
            # Serving reads "the list of product X in version V" in rank order: this
            # unique index is that read (and keeps a retried write from duplicating).
            models.UniqueConstraint(
                fields=["model_version", "product_id", "rank"], name="related_product_version_product_rank"
            )
        ]

    def __str__(self) -> str:
        return f"{self.product_id} -> {self.related_product_id} #{self.rank}"


class TrendingProduct(models.Model):
    """Time-decayed popularity, overall (category "") and per category."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="trending")
    category = models.CharField(max_length=255, blank=True, default="")
    product_id = models.CharField(max_length=255)
    rank = models.PositiveSmallIntegerField()
    score = models.FloatField()

    class Meta:
        constraints = [
            # Serving reads "trending in category C (or overall) of version V" in rank order.
            models.UniqueConstraint(
                fields=["model_version", "category", "rank"], name="trending_product_version_category_rank"
            )
        ]

    def __str__(self) -> str:
        return f"{self.category or 'all'} #{self.rank}: {self.product_id}"


# --- Tracking (recommendations/tracking/) -----------------------------------------------


class RecommendationServed(models.Model):
    """One list served: compact (product ids only; slot = position in the list)."""

    id = models.CharField(primary_key=True, max_length=32)  # the recommendation_id given out
    # Served by recs_served_project_time; one index fewer per list served.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    # A plain id, not a foreign key: profiles merge and the log must not hold them.
    profile_id = models.BigIntegerField(null=True, blank=True)
    user_ref = models.CharField(max_length=255, blank=True, default="")
    surface = models.CharField(max_length=16)
    products = models.JSONField(default=list)
    model_version_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            # Attribution without a recommendation id: "lists served to profile P in
            # the window before the event" (profile_id = ? AND created_at BETWEEN ...).
            models.Index(fields=["profile_id", "created_at"], name="recs_served_profile_time"),
            # The console's per-project, per-day listing.
            models.Index(fields=["project", "created_at"], name="recs_served_project_time"),
        ]

    def __str__(self) -> str:
        return self.id


class EngagementKind(models.TextChoices):
    CLICK = "click"
    CONVERSION = "conversion"


class RecommendationEngagement(models.Model):
    """A click on, or a purchase of, a served product: once per (list, slot, kind)."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    served = models.ForeignKey(RecommendationServed, on_delete=models.CASCADE, related_name="engagements")
    surface = models.CharField(max_length=16)
    day = models.DateField()  # the day the list was served (the statistics row it counts in)
    kind = models.CharField(max_length=12, choices=EngagementKind.choices)
    slot = models.PositiveSmallIntegerField()
    product_id = models.CharField(max_length=255)
    event_message_id = models.CharField(max_length=255)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["served", "slot", "kind"], name="recs_engagement_once_per_slot")]

    def __str__(self) -> str:
        return f"{self.kind} {self.served_id}#{self.slot}"


class RecommendationDailyStat(models.Model):
    """Per project, day (UTC) and surface: lists served, impressions and clicks per
    slot, conversions. Written by tracking in bulk; read by the console."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    surface = models.CharField(max_length=16)
    lists = models.BigIntegerField(default=0)
    slot_impressions = models.JSONField(default=list)  # [n at slot 1, n at slot 2, ...]
    slot_clicks = models.JSONField(default=list)
    conversions = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "surface"]
        constraints = [models.UniqueConstraint(fields=["project", "day", "surface"], name="recs_daily_stat_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.surface}"

    @property
    def impressions(self) -> int:
        return sum(self.slot_impressions)

    @property
    def clicks(self) -> int:
        return sum(self.slot_clicks)


class RecommendedProductDay(models.Model):
    """That a product was recommended at least once on a day and surface: the
    catalog coverage of what was recommended is a count of these rows."""

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    surface = models.CharField(max_length=16)
    product_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            # Also serves the coverage count (project, day, surface) as an index-only scan.
            models.UniqueConstraint(
                fields=["project", "day", "surface", "product_id"], name="recs_recommended_product_day_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.surface} {self.product_id}"
