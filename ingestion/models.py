"""Ingestion's own table: the dead letters (event-name mappings are crm's, crm.vocabulary).

Events, profiles and devices themselves live in crm (the data store); ingestion
writes them only through crm.services.
"""

from __future__ import annotations

from django.db import models

from crm.models import Project


class DeadLetter(models.Model):
    """A message the ingest worker could not store, kept with its error so that
    it neither blocks the queue nor disappears."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=255, blank=True, default="")
    # The message as the collector accepted it (normalised, timestamp corrected),
    # as JSON text rather than jsonb: jsonb (and text) cannot hold a NUL
    # character, a common reason to be here, and JSON text escapes it
    # (`\u0000`, reversibly), so the letter itself can always be stored.
    message = models.TextField()
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
