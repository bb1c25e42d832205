"""An example email campaign for a project (the quickstart's demo store): a draft
ready to start from the console, to the demo segment "Engaged browsers, no
recent order", with two variants (A/B) showing three recommended products each
and a 10 % control group. Starting it sends to the providers the project's
email settings name (the quickstart: the local SendGrid, whose outbox the
console shows). Idempotent: a campaign of the same name is left as it is."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from campaigns.models import Campaign, CampaignChannel, Segment, Variant
from crm.models import Project

DEMO_NAME = "We picked these for you (demo A/B)"
# The demo segment it targets (create_demo_segments); without it, everyone reachable by email.
DEMO_SEGMENT = "Engaged browsers, no recent order"
DEMO_HTML = """<p>Hi {{ user.first_name | default: "there" }},</p>
<p>{{ intro }}</p>
<ul>
{% for p in recommendations %}  <li><a href="{{ p.url | default: p.deeplink }}">{{ p.name }}</a> {{ p.price }}</li>
{% endfor %}</ul>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"""
DEMO_TEXT = """Hi {{ user.first_name | default: "there" }},
{{ intro }}
{% for p in recommendations %}- {{ p.name }} {{ p.price }}
{% endfor %}
Unsubscribe: {{ unsubscribe_url }}"""
VARIANTS = [
    ("A", "Still thinking it over? These are close to what you looked at.", "Still thinking it over?"),
    ("B", "Picked for you from what you viewed this week.", "{{ user.first_name | default: 'Hi' }}, picked for you"),
]


class Command(BaseCommand):
    help = "Create an example email campaign (a draft with two variants) for a project (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        campaign = Campaign.objects.filter(project_id=project_id, name=DEMO_NAME).first()
        created = campaign is None
        if created:
            with transaction.atomic():
                campaign = Campaign.objects.create(
                    project_id=project_id,
                    name=DEMO_NAME,
                    channel=CampaignChannel.EMAIL,
                    segment=Segment.objects.filter(project_id=project_id, name=DEMO_SEGMENT).first(),
                    control_percent=10,
                    goal_event="Order Completed",
                    goal_window_hours=72,
                )
                for name, intro, subject in VARIANTS:
                    # The intro is plain text in both fields; Liquid's assign keeps one template per field.
                    prefix = "{% assign intro = " + json.dumps(intro) + " %}"
                    Variant.objects.create(
                        campaign=campaign,
                        name=name,
                        share=50,
                        content={"subject": subject, "html": prefix + DEMO_HTML, "text": prefix + DEMO_TEXT},
                        recommendations={"limit": 3, "in_stock": True},
                    )
        self.stdout.write(json.dumps({"project": project_id, "email_campaign": campaign.pk, "created": created}))
