import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crm.demo import demo_catalog_build, demo_data_write
from crm.models import Project


class Command(BaseCommand):
    help = (
        "Write a realistic synthetic data set straight to the store: users with demographics and "
        "devices, and view/cart/purchase events with long-tailed popularity and session structure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--users", type=int, default=1000)
        parser.add_argument("--products", type=int, default=500)
        parser.add_argument("--events", type=int, default=20_000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--days", type=int, default=90, help="length of the history, ending now")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("users", "products", "events", "days"):
            if options[name] < (1 if name in ("products", "days") else 0):
                raise CommandError(f"--{name} must be positive")
        if not Project.objects.filter(pk=options["project"]).exists():
            raise CommandError(f"project {options['project']} does not exist")
        catalog = demo_catalog_build(products=options["products"], seed=options["seed"])
        bar = tqdm(total=options["events"], unit="ev", disable=options["no_progress"], desc="events")
        result = demo_data_write(
            project_id=options["project"],
            catalog=catalog,
            users=options["users"],
            events=options["events"],
            seed=options["seed"],
            days=options["days"],
            on_progress=lambda _users, events: bar.update(events),
        )
        bar.close()
        self.stdout.write(json.dumps({"project": options["project"], "users": result.users, "events": result.events}))
