"""What the local provider server accepted: one row per message delivered to it
(one per SendGrid personalization recipient, FCM message, Twilio message,
webhook request). Not a project's data: the server stands in for SendGrid,
Google and Twilio, which know nothing of projects (console: superusers only)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    class Provider(models.TextChoices):
        SENDGRID = "sendgrid", "SendGrid (email)"
        FCM = "fcm", "FCM (push)"
        TWILIO = "twilio", "Twilio (SMS)"
        WEBHOOK = "webhook", "Webhook"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    # One per HTTP request: the rows of one SendGrid call share it (a test counts calls by it).
    call_id = models.UUIDField()
    recipient = models.CharField(max_length=4096, help_text="Email address, FCM token, phone number or webhook name.")
    subject = models.TextField(blank=True, help_text="Email subject or push title.")
    body = models.TextField(blank=True, help_text="Email text, push body, SMS text or the webhook's raw body.")
    html = models.TextField(blank=True)
    # The sender's id of the message: SendGrid custom_args.message_id, FCM data.engage_message_id, webhook-id.
    message_key = models.CharField(max_length=255, blank=True)
    duplicate = models.BooleanField(default=False, help_text="An earlier message of this provider had the same key.")
    signature_valid = models.BooleanField(null=True, help_text="Webhooks: the Standard Webhooks signature verified.")
    headers = models.JSONField(default=dict, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="The request as it concerns this message.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            # The writer's duplicate check (localproviders.outbox), by provider and key.
            models.Index(fields=["provider", "message_key"], name="outbox_provider_key"),
            # The console's changelist, newest first.
            models.Index(fields=["-received_at"], name="outbox_received"),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} → {self.recipient[:60]}"
