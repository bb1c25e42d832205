import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.services import project_create


class Command(BaseCommand):
    help = "Create a project and print its id and keys as one JSON line (keys are shown only here)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/London")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project, keys = project_create(name=options["name"], timezone_name=options["timezone"])
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        self.stdout.write(
            json.dumps(
                {"id": project.pk, "name": project.name, "write_key": keys.write_key, "secret_key": keys.secret_key}
            )
        )
