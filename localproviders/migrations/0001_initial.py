import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="OutboxMessage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "provider",
                    models.CharField(
                        choices=[
                            ("sendgrid", "SendGrid (email)"),
                            ("fcm", "FCM (push)"),
                            ("twilio", "Twilio (SMS)"),
                            ("webhook", "Webhook"),
                        ],
                        max_length=16,
                    ),
                ),
                ("call_id", models.UUIDField()),
                (
                    "recipient",
                    models.CharField(
                        help_text="Email address, FCM token, phone number or webhook name.", max_length=4096
                    ),
                ),
                ("subject", models.TextField(blank=True, help_text="Email subject or push title.")),
                (
                    "body",
                    models.TextField(
                        blank=True, help_text="Email text, push body, SMS text or the webhook's raw body."
                    ),
                ),
                ("html", models.TextField(blank=True)),
                ("message_key", models.CharField(blank=True, max_length=255)),
                (
                    "duplicate",
                    models.BooleanField(
                        default=False, help_text="An earlier message of this provider had the same key."
                    ),
                ),
                (
                    "signature_valid",
                    models.BooleanField(
                        help_text="Webhooks: the Standard Webhooks signature verified.", null=True
                    ),
                ),
                ("headers", models.JSONField(blank=True, default=dict)),
                (
                    "request",
                    models.JSONField(blank=True, default=dict, help_text="The request as it concerns this message."),
                ),
                ("received_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["-received_at", "-id"],
                "indexes": [
                    models.Index(fields=["provider", "message_key"], name="outbox_provider_key"),
                    models.Index(fields=["-received_at"], name="outbox_received"),
                ],
            },
        ),
    ]
