"""Example segments for a project (the quickstart's demo store): one of each kind
of condition the console's builder offers, computed like any saved segment.
Idempotent: a segment of the same name is left as it is."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.models import Segment
from campaigns.segments.membership import segment_save
from crm.models import Project

DEMO_SEGMENTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Engaged browsers, no recent order",
        "Viewed products at least 3 times in the last 7 days and placed no order in the last 30.",
        {
            "all": [
                {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
                {"event": "Order Completed", "did": False, "window": {"last_days": 30}},
            ]
        },
    ),
    (
        "Big spenders",
        "Spent more than 200 in orders over the last 90 days.",
        {
            "event": "Order Completed",
            "aggregate": {"fn": "sum", "property": "revenue", "op": "gt", "value": 200},
            "window": {"last_days": 90},
        },
    ),
    (
        "Reachable by push in GB and US",
        "A device with a push token, not opted out of push, in the United Kingdom or the United States.",
        {
            "all": [
                {"profile": "country", "op": "in", "value": ["GB", "US"]},
                {"device": [{"field": "push_token", "op": "exists"}]},
                {"not": {"profile": "push_subscribed", "op": "eq", "value": False}},
            ]
        },
    ),
    (
        "Holdout sample (10 %)",
        "A stable tenth of the profiles, by user bucket.",
        {"bucket": {"op": "between", "value": [0, 99]}},
    ),
]


class Command(BaseCommand):
    help = "Create example segments for a project (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        existing = set(Segment.objects.filter(project_id=project_id).values_list("name", flat=True))
        created = []
        for name, description, rules in DEMO_SEGMENTS:
            if name not in existing:
                created.append(segment_save(project_id=project_id, name=name, description=description, rules=rules).pk)
        self.stdout.write(json.dumps({"project": project_id, "segments_created": created}))
