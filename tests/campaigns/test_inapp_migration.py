"""The data migration that turns the old in-app messages into in-app campaigns
(campaigns/migrations/0005_triggers_inapp.py), run on a real database from the
schema before it, and back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("campaigns", "0004_core_run_planning")]
TEMPLATE = '<ul>{% for p in products %}<li class="products">{{ p.name }}</li>{% endfor %}</ul>'


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_in_app_messages_become_in_app_campaigns_with_one_variant():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("campaigns")
    old = migrate(BEFORE)
    Project = old.get_model("crm", "Project")
    InAppMessage = old.get_model("campaigns", "InAppMessage")
    project = Project.objects.create(name="Shop", write_key_hash="w" * 64, secret_key_hash="s" * 64)
    InAppMessage.objects.create(
        project=project, name="Picks", template=TEMPLATE, priority=3, products_count=5, category="Shoes",
        in_stock_only=True, max_per_session=2, max_per_day=4,
    )  # fmt: skip
    InAppMessage.objects.create(project=project, name="Old", template="x", is_active=False)

    new = migrate(latest)
    Campaign = new.get_model("campaigns", "Campaign")
    campaigns = {c.name: c for c in Campaign.objects.filter(project_id=project.pk)}
    picks, old_one = campaigns["Picks"], campaigns["Old"]
    assert (picks.channel, picks.status, picks.priority, picks.max_per_session, picks.max_per_day) == (
        "in_app", "scheduled", 3, 2, 4,
    )  # fmt: skip
    assert (old_one.channel, old_one.status) == ("in_app", "draft")
    [variant] = picks.variants.all()
    # The list the template loops over is now `recommendations`; the HTML around it is left alone.
    assert variant.content == {
        "html": '<ul>{% for p in recommendations %}<li class="products">{{ p.name }}</li>{% endfor %}</ul>'
    }
    assert variant.recommendations == {"limit": 5, "category": "Shoes", "in_stock": True}
    assert (variant.name, variant.share) == ("A", 100)

    back = migrate(BEFORE)
    restored = {m.name: m for m in back.get_model("campaigns", "InAppMessage").objects.all()}
    assert restored["Picks"].template == TEMPLATE
    picks_back = restored["Picks"]
    assert (picks_back.products_count, picks_back.is_active, restored["Old"].is_active) == (5, True, False)
    migrate(latest)
