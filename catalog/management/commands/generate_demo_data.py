"""Write a realistic synthetic data set: the catalog (through the catalog's bulk
upsert), then users, devices and events (crm.demo.demo_data_write).

Lives in the catalog app because crm must not import catalog; `quickstart`
calls it by name."""

import json
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from tqdm import tqdm

from catalog.csvfile import ProductIn
from catalog.services import IMPORT_CHUNK_ROWS, products_upsert
from crm.demo import DemoCatalog, demo_catalog_build, demo_data_write
from crm.models import Project


def _demo_products(catalog: DemoCatalog) -> list[ProductIn]:
    return [
        ProductIn(
            product_id=p.product_id,
            name=p.name,
            categories=p.categories,
            price=Decimal(str(p.price)),
            currency="USD",
            rating=p.rating,
            description=p.description,
            image_url=p.image_url,
            deeplink=p.deeplink,
            in_stock=p.in_stock,
            is_active=True,
            properties={"brand": p.brand},
        )
        for p in catalog.products
    ]


class Command(BaseCommand):
    help = (
        "Write a realistic synthetic data set straight to the store: a product catalog, users with "
        "demographics and devices, and view/cart/purchase events with long-tailed popularity and "
        "session structure."
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
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        catalog = demo_catalog_build(products=options["products"], seed=options["seed"])
        products = _demo_products(catalog)
        written = 0
        for start in range(0, len(products), IMPORT_CHUNK_ROWS):
            # Each chunk its own transaction, as in a catalog import.
            with transaction.atomic():
                result = products_upsert(project_id=project_id, products=products[start : start + IMPORT_CHUNK_ROWS])
            written += result.created + result.updated
        bar = tqdm(total=options["events"], unit="ev", disable=options["no_progress"], desc="events")
        result = demo_data_write(
            project_id=project_id,
            catalog=catalog,
            users=options["users"],
            events=options["events"],
            seed=options["seed"],
            days=options["days"],
            on_progress=lambda _users, events: bar.update(events),
        )
        bar.close()
        self.stdout.write(
            json.dumps({"project": project_id, "products": written, "users": result.users, "events": result.events})
        )
