"""Ingestion's own tables: per-project event-name mappings and the dead letters.

Events, profiles and devices themselves live in crm (the data store); ingestion
writes them only through crm.services.
"""

from __future__ import annotations

from django.db import models

from crm.models import Project


class CanonicalEvent(models.TextChoices):
    """The Segment e-commerce events that feed a profile's recent items."""

    PRODUCT_VIEWED = "Product Viewed"
    PRODUCT_ADDED = "Product Added"
    ORDER_COMPLETED = "Order Completed"


class EventNameMapping(models.Model):
    """A project's own event name treated as one of the e-commerce events
    ("Viewed Item" -> "Product Viewed"). The stored event keeps the name it was
    sent with; only the recent-items update reads the mapping."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source_name = models.CharField(max_length=255, help_text="The event name your app sends.")
    canonical_name = models.CharField(max_length=32, choices=CanonicalEvent.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "source_name"]
        constraints = [
            # Also serves the worker's "mappings of project X" read.
            models.UniqueConstraint(fields=["project", "source_name"], name="event_name_mapping_unique")
        ]

    def __str__(self) -> str:
        return f"{self.source_name} → {self.canonical_name}"


class DeadLetter(models.Model):
    """A message the ingest worker could not store, kept with its error so that
    it neither blocks the queue nor disappears."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=255, blank=True, default="")
    # The message as the collector accepted it (normalised, timestamp corrected).
    message = models.JSONField()
    error = models.TextField()
    traceback = models.TextField(blank=True, default="")
    received_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The console lists a project's newest dead letters.
            models.Index(fields=["project", "-id"], name="dead_letter_project_id"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id or 'message'}: {self.error[:80]}"
