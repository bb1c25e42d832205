"""Triggered campaigns' pending triggers, and the in-app message becomes a channel:
every InAppMessage turns into an in-app Campaign with one variant (its template,
its recommendation settings, priority and caps), then the model goes."""

import re

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

# The in-app message's template saw `products`; a campaign's templates see the
# same list as `recommendations` (campaigns.sending.context). Only names inside
# Liquid tags and outputs are rewritten, never the HTML around them.
_LIQUID = re.compile(r"({{.*?}}|{%.*?%})", re.DOTALL)
_PRODUCTS = re.compile(r"\bproducts\b")


def template_port(source: str) -> str:
    return _LIQUID.sub(lambda m: _PRODUCTS.sub("recommendations", m.group(0)), source)


def inapp_messages_to_campaigns(apps, schema_editor):
    InAppMessage = apps.get_model("campaigns", "InAppMessage")
    Campaign = apps.get_model("campaigns", "Campaign")
    Variant = apps.get_model("campaigns", "Variant")
    for message in InAppMessage.objects.order_by("id").iterator():
        campaign = Campaign.objects.create(
            project_id=message.project_id,
            name=message.name,
            channel="in_app",
            # Active: shown from now on; inactive: kept as a draft, shown to nobody.
            status="scheduled" if message.is_active else "draft",
            schedule_kind="now",
            priority=message.priority,
            max_per_session=message.max_per_session,
            max_per_day=message.max_per_day,
        )
        Variant.objects.create(
            campaign=campaign,
            name="A",
            share=100,
            content={"html": template_port(message.template)},
            recommendations={
                "limit": message.products_count,
                "category": message.category,
                "in_stock": True if message.in_stock_only else None,
            },
        )


def campaigns_to_inapp_messages(apps, schema_editor):
    """Back: each in-app campaign's first variant becomes an InAppMessage again."""
    InAppMessage = apps.get_model("campaigns", "InAppMessage")
    Campaign = apps.get_model("campaigns", "Campaign")
    for campaign in Campaign.objects.filter(channel="in_app").order_by("id").prefetch_related("variants"):
        variant = next(iter(campaign.variants.all()), None)
        recommendations = variant.recommendations if variant else {}
        html = (variant.content or {}).get("html", "") if variant else ""
        InAppMessage.objects.create(
            project_id=campaign.project_id,
            name=campaign.name,
            is_active=campaign.status in ("scheduled", "running"),
            priority=campaign.priority,
            template=_LIQUID.sub(lambda m: re.sub(r"\brecommendations\b", "products", m.group(0)), html),
            products_count=recommendations.get("limit") or 4,
            category=recommendations.get("category") or "",
            in_stock_only=bool(recommendations.get("in_stock")),
            max_per_session=campaign.max_per_session,
            max_per_day=campaign.max_per_day,
        )
        campaign.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_core_run_planning"),
        ("crm", "0007_event_project_name_time_pid"),
    ]

    operations = [
        migrations.CreateModel(
            name="CampaignTrigger",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_message_id", models.CharField(max_length=255)),
                ("event_name", models.CharField(max_length=255)),
                ("event_properties", models.JSONField(blank=True, default=dict)),
                ("event_timestamp", models.DateTimeField()),
                ("due_at", models.DateTimeField()),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("sent", "Sent"),
                            ("cancelled", "Cancelled"),
                            ("skipped", "Skipped"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("reason", models.TextField(blank=True, default="")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("done_at", models.DateTimeField(blank=True, null=True)),
                (
                    "campaign",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="triggers",
                        to="campaigns.campaign",
                    ),
                ),
                (
                    "profile",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="crm.profile"),
                ),
                (
                    "project",
                    models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="crm.project"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("campaign", "event_message_id"), name="campaign_trigger_event_unique"
                    )
                ],
                "indexes": [
                    models.Index(
                        condition=models.Q(("state", "pending")), fields=["due_at"], name="campaign_trigger_due"
                    )
                ],
            },
        ),
        migrations.RunPython(inapp_messages_to_campaigns, campaigns_to_inapp_messages),
        migrations.DeleteModel(name="InAppMessage"),
    ]
