"""Point a project's delivery channels at this server's local providers (the
quickstart's demo project), through the delivery service's own settings save:
email, push, SMS and webhooks then send through their real client libraries to
/_local/ and land in the console's outbox."""

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.models import Project
from delivery.services import channel_settings_save
from localproviders.channel_settings import local_channel_settings, local_service_account


class Command(BaseCommand):
    help = "Save the local providers' settings as a project's channel settings (LOCAL_PROVIDERS only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--host", default="http://127.0.0.1:8000", help="where this server answers")
        parser.add_argument("--service-account", default="", help="the local service account JSON (default: a new one)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.LOCAL_PROVIDERS:
            raise CommandError("LOCAL_PROVIDERS is off: there are no local providers to point channels at")
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        account = (
            json.loads(options["service_account"])
            if options["service_account"]
            else local_service_account(base_url=options["host"])
        )
        channels = local_channel_settings(base_url=options["host"], service_account=account)
        for channel, values in channels.items():
            channel_settings_save(project_id=project_id, channel=channel, settings=values)
        self.stdout.write(json.dumps({"project": project_id, "channels": sorted(channels)}))
