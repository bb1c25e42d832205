"""An example in-app campaign for a project (the quickstart's demo store): shown
to everyone on "App Launched" and as a web pop-up, with the user's
recommendations. Idempotent: a campaign of the same name is left as it is."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from campaigns.models import Campaign, CampaignChannel, Variant
from campaigns.sending.lifecycle import campaign_start
from crm.models import Project

DEMO_NAME = "Picked for you"
DEMO_TEMPLATE = """<div class="engage-inapp">
  <h3>{% if user.first_name %}{{ user.first_name }}, p{% else %}P{% endif %}icked for you</h3>
  <ul>
  {% for p in recommendations %}
    <li><a href="{{ p.deeplink }}"><img src="{{ p.image_url }}" alt=""> {{ p.name }} {{ p.price }}</a></li>
  {% endfor %}
  </ul>
</div>"""


class Command(BaseCommand):
    help = "Create an example in-app campaign for a project (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        found = Campaign.objects.filter(project_id=project_id, name=DEMO_NAME, channel=CampaignChannel.IN_APP)
        campaign = found.first()
        created = campaign is None
        if created:
            with transaction.atomic():
                campaign = Campaign.objects.create(
                    project_id=project_id,
                    name=DEMO_NAME,
                    channel=CampaignChannel.IN_APP,
                    max_per_session=1,
                    max_per_day=3,
                )
                Variant.objects.create(
                    campaign=campaign,
                    name="A",
                    content={"html": DEMO_TEMPLATE},
                    recommendations={"limit": 4, "in_stock": True},
                )
                # Validated and scheduled like any campaign; in-app has no run to plan: the collectors show it.
                campaign = campaign_start(campaign_id=campaign.pk)
        self.stdout.write(json.dumps({"project": project_id, "inapp_campaign": campaign.pk, "created": created}))
