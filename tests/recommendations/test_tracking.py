"""Tracking: served lists, clicks and conversions from events, daily statistics."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from crm.models import Profile
from ingestion.spec import message_normalize
from ingestion.store import messages_store
from recommendations import serving, tracking
from recommendations.models import (
    RecommendationDailyStat,
    RecommendationEngagement,
    RecommendationServed,
    RecommendedProductDay,
)
from tests.recommendations.serving_data import catalog_write, version_write


def serve(project, user="u1", limit=3):
    served = serving.recommendations_for_user(project_id=project.pk, user_id=user, limit=limit)
    tracking.served_record(project_id=project.pk, served=served, surface="api", user_ref=user)
    return served


def store(project, *raw):
    now = timezone.now()
    messages = [message_normalize(m, project_id=project.pk, received_at=now) for m in raw]
    return messages_store(project_id=project.pk, messages=messages)


@pytest.mark.django_db
def test_served_lists_are_recorded_with_daily_impressions_per_slot(shop):
    first = serve(shop, limit=3)
    serve(shop, limit=2)
    assert RecommendationServed.objects.get(pk=first.recommendation_id).products == ["p2", "p4", "p5"]
    stat = RecommendationDailyStat.objects.get(project=shop, surface="api")
    assert (stat.lists, stat.slot_impressions, stat.slot_clicks) == (2, [2, 2, 1], [])
    assert set(RecommendedProductDay.objects.filter(project=shop).values_list("product_id", flat=True)) == {
        "p2",
        "p4",
        "p5",
    }


@pytest.mark.django_db
def test_a_process_inserts_each_products_day_row_once(shop, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with django_capture_on_commit_callbacks(execute=True):
        serve(shop, limit=3)  # p2, p4, p5: written, then remembered once committed
    with CaptureQueriesContext(connection) as queries:
        serve(shop, limit=2)
    assert not any("recommendedproductday" in q["sql"] for q in queries.captured_queries)
    stat = RecommendationDailyStat.objects.get(project=shop, surface="api")
    assert (stat.lists, stat.slot_impressions) == (2, [2, 2, 1])
    assert RecommendedProductDay.objects.filter(project=shop).count() == 3


@pytest.mark.django_db
def test_buffered_recording_writes_on_flush(shop, settings):
    settings.RECS_TRACKING_FLUSH_SECONDS = 3600  # the thread will not flush during the test
    served = serve(shop)
    assert not RecommendationServed.objects.filter(pk=served.recommendation_id).exists()
    assert tracking.served_flush() == 1
    assert RecommendationServed.objects.filter(pk=served.recommendation_id).exists()


@pytest.mark.django_db
def test_a_view_with_the_recommendation_id_is_a_click_on_its_slot_once(shop):
    served = serve(shop)
    click = {
        "type": "track",
        "userId": "u1",
        "event": "Product Clicked",
        "properties": {"product_id": "p4", "recommendation_id": served.recommendation_id},
    }
    store(shop, {**click, "messageId": "c1"}, {**click, "messageId": "c2"})
    engagement = RecommendationEngagement.objects.get()
    assert (engagement.kind, engagement.slot, engagement.product_id, engagement.served_id) == (
        "click",
        1,
        "p4",
        served.recommendation_id,
    )
    stat = RecommendationDailyStat.objects.get(project=shop, surface="api")
    assert stat.slot_clicks == [0, 1]
    # A redelivered message is a duplicate event: nothing counts twice.
    store(shop, {**click, "messageId": "c1"})
    assert RecommendationEngagement.objects.count() == 1


@pytest.mark.django_db
def test_a_view_of_a_recommended_product_within_the_window_is_a_click(shop):
    served = serve(shop)
    store(
        shop,
        {
            "type": "track",
            "userId": "u1",
            "event": "Product Viewed",
            "messageId": "v1",
            "properties": {"product_id": "p5"},
        },
    )
    engagement = RecommendationEngagement.objects.get()
    assert (engagement.served_id, engagement.slot) == (served.recommendation_id, 2)
    # Outside the window it is not.
    RecommendationServed.objects.update(created_at=timezone.now() - timedelta(hours=2))
    RecommendationEngagement.objects.all().delete()
    store(
        shop,
        {
            "type": "track",
            "userId": "u1",
            "event": "Product Viewed",
            "messageId": "v2",
            "properties": {"product_id": "p5"},
        },
    )
    assert RecommendationEngagement.objects.count() == 0


@pytest.mark.django_db
def test_an_order_containing_a_recommended_product_is_a_conversion(shop):
    served = serve(shop)
    store(
        shop,
        {
            "type": "track",
            "userId": "u1",
            "event": "Order Completed",
            "messageId": "o1",
            "properties": {"order_id": "A1", "products": [{"product_id": "p2"}, {"product_id": "p7"}]},
        },
    )
    engagement = RecommendationEngagement.objects.get()
    assert (engagement.kind, engagement.slot, engagement.product_id) == ("conversion", 0, "p2")
    assert RecommendationDailyStat.objects.get(project=shop, surface="api").conversions == 1
    assert engagement.served_id == served.recommendation_id


@pytest.mark.django_db
def test_a_recommendation_id_of_another_project_is_ignored(shop, project_b):
    served = serve(shop)
    other = project_b[0]
    messages_store(
        project_id=other.pk,
        messages=[
            message_normalize(
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "Product Clicked",
                    "messageId": "x1",
                    "properties": {"product_id": "p4", "recommendation_id": served.recommendation_id},
                },
                project_id=other.pk,
                received_at=timezone.now(),
            )
        ],
    )
    assert RecommendationEngagement.objects.count() == 0
    assert Profile.objects.filter(project=other, user_id="u1").exists()  # the event itself was stored


@pytest.mark.django_db
def test_console_shows_ctr_per_slot_conversions_and_coverage(shop, client):
    served = serve(shop)
    store(
        shop,
        {
            "type": "track",
            "userId": "u1",
            "event": "Product Clicked",
            "messageId": "c1",
            "properties": {"product_id": "p2", "recommendation_id": served.recommendation_id},
        },
    )
    admin = get_user_model().objects.create_superuser("root", "r@x.io", "pw-root-123")
    client.force_login(admin)
    response = client.get(reverse("admin:recommendations_recommendationdailystat_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    # 1 click on 1 list of 3: CTR 33.33% overall, slots 100% · 0.0% · 0.0%, coverage 3 of 8 products.
    assert "33.33%" in html
    assert "100.0% · 0.0% · 0.0%" in html
    assert "37.5% (3 of 8)" in html


@pytest.mark.django_db
def test_marketers_see_only_their_projects_statistics(shop, project_b, marketer_a, client):
    serve(shop)
    catalog_write(project_b[0].pk)
    version_write(project_b[0].pk)
    serving_b = serving.trending_products_served(project_id=project_b[0].pk, limit=2)
    tracking.served_record(project_id=project_b[0].pk, served=serving_b, surface="api", user_ref="")
    client.force_login(marketer_a)
    response = client.get(reverse("admin:recommendations_recommendationdailystat_changelist"))
    assert [s.project_id for s in response.context["cl"].result_list] == [shop.pk]
    other = RecommendationDailyStat.objects.get(project=project_b[0])
    assert (
        client.get(reverse("admin:recommendations_recommendationdailystat_change", args=[other.pk])).status_code == 302
    )
    response = client.get(reverse("admin:recommendations_recommendationserved_changelist"))
    assert {s.project_id for s in response.context["cl"].result_list} == {shop.pk}


@pytest.mark.django_db
def test_attribution_costs_a_few_queries_per_batch_not_one_per_event(shop):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from recommendations.tracking import TrackedEvent, engagements_attribute

    serve(shop)
    profile_id = Profile.objects.get(project=shop, user_id="u1").pk
    now = timezone.now()
    events = [
        TrackedEvent(profile_id=profile_id, name="Product Viewed", properties={"product_id": f"x{i}"},
                     timestamp=now, message_id=f"q{i}")
        for i in range(50)
    ] + [TrackedEvent(profile_id=profile_id, name="Product Viewed", properties={"product_id": "p5"},
                      timestamp=now, message_id="q-hit")]  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        assert engagements_attribute(project_id=shop.pk, events=events) == 1
    assert len(queries.captured_queries) <= 8
