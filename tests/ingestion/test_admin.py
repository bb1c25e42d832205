"""Console: event-name mappings and dead letters, scoped to the marketer's projects."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm.models import Event, EventNameMapping
from ingestion.models import DeadLetter
from ingestion.store import dead_letter_record

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def letter(project, n):
    message = {"type": "track", "userId": "u1", "event": f"Bad {n}", "messageId": f"dl-{n}",
               "timestamp": T0.isoformat(), "receivedAt": T0.isoformat()}  # fmt: skip
    try:
        raise ValueError(f"broken thing {n}")
    except ValueError as exc:
        return dead_letter_record(project_id=project.pk, message=message, error=exc)


def test_dead_letters_are_listed_with_their_error_for_the_marketers_projects_only(
    project_a, project_b, marketer_a, client
):
    own = [letter(project_a[0], i) for i in range(25)]
    other = letter(project_b[0], 99)
    client.force_login(marketer_a)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:ingestion_deadletter_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "ValueError: broken thing 24" in page and "dl-24" in page
    assert "broken thing 99" not in page
    assert len(response.context["cl"].result_list) == 25
    # No query per row, no unbounded count, the message bodies not loaded.
    sql = [q["sql"] for q in queries.captured_queries]
    assert len(sql) <= 12, sql
    selects = [s for s in sql if 'FROM "ingestion_deadletter"' in s and "COUNT(" not in s.upper()]
    assert selects and all('"ingestion_deadletter"."message"' not in s for s in selects)
    # The detail page shows the message and the traceback; another project's is not reachable.
    detail = client.get(reverse("admin:ingestion_deadletter_change", args=[own[0].pk])).content.decode()
    assert "Traceback" in detail and "Bad 0" in detail
    response = client.get(reverse("admin:ingestion_deadletter_change", args=[other.pk]))
    assert response.status_code == 302
    # Read-only: no add, no edit.
    assert client.get(reverse("admin:ingestion_deadletter_add")).status_code == 403
    assert (
        client.post(reverse("admin:ingestion_deadletter_change", args=[own[0].pk]), {"error": "x"}).status_code == 403
    )


def test_requeue_action_processes_dead_letters_again(project_a, project_b, marketer_a, client):
    own, other = letter(project_a[0], 1), letter(project_b[0], 2)
    client.force_login(marketer_a)
    response = client.post(
        reverse("admin:ingestion_deadletter_changelist"),
        {"action": "requeue", "_selected_action": [own.pk, other.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 stored, 0 already stored, 0 failed again." in response.content.decode()
    assert list(Event.objects.values_list("project_id", "message_id")) == [(project_a[0].pk, "dl-1")]
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [other.pk]


def test_marketer_maps_event_names_only_in_their_projects(project_a, project_b, marketer_a, client):
    client.force_login(marketer_a)
    url = reverse("admin:crm_eventnamemapping_add")
    response = client.post(
        url, {"project": project_a[0].pk, "source_name": "Viewed Item", "canonical_name": "Product Viewed"}
    )
    assert response.status_code == 302
    mapping = EventNameMapping.objects.get()
    assert (mapping.project_id, mapping.source_name, mapping.canonical_name) == (
        project_a[0].pk,
        "Viewed Item",
        "Product Viewed",
    )
    # Another project is not a choice.
    response = client.post(
        url, {"project": project_b[0].pk, "source_name": "Bought", "canonical_name": "Order Completed"}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert EventNameMapping.objects.count() == 1
    other = EventNameMapping.objects.create(project=project_b[0], source_name="x", canonical_name="Product Added")
    listing = client.get(reverse("admin:crm_eventnamemapping_changelist"))
    assert list(listing.context["cl"].result_list) == [mapping]
    assert client.get(reverse("admin:crm_eventnamemapping_change", args=[other.pk])).status_code == 302
