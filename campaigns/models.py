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
