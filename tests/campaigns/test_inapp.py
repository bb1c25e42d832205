"""The collector's answer to "App Launched": the in-app message rendered for the
user with their recommendations, within the message's caps."""

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError

from campaigns.models import InAppMessage
from recommendations.models import RecommendationServed
from tests.conftest import basic_header
from tests.recommendations.serving_data import catalog_write, user_write, version_write

TEMPLATE = "Hi {{ user.first_name }}! {% for p in products %}[{{ p.name }} {{ p.price }} {{ p.deeplink }}]{% endfor %}"


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


@pytest.fixture
def shop(project_a):
    project, keys = project_a
    catalog_write(project.pk)
    version_write(project.pk)
    user_write(project.pk, "u1", viewed=["p3", "p1"])
    from crm.services import profile_upsert

    profile_upsert(project_id=project.pk, user_id="u1", traits={"firstName": "Ada", "name": "Ada Lovelace"})
    InAppMessage.objects.create(
        project=project, name="Picks", template=TEMPLATE, products_count=2, max_per_session=1, max_per_day=2
    )
    return project, keys


def launch(client, keys, user="u1", session=None, event="App Launched", path="/v1/track"):
    body = {"userId": user, "event": event, "properties": {}}
    if session:
        body["context"] = {"sessionId": session}
    return client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=basic_header(keys.write_key))


@pytest.mark.django_db
def test_app_launched_is_answered_with_the_rendered_message(shop, client):
    project, keys = shop
    response = launch(client, keys, session="s1")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    [message] = body["in_app"]
    # In stock only by default: p4 is out of stock, so p2 then p5.
    assert message["body"] == "Hi Ada! [Product p2 120.0 shop://p/p2][Product p5 10.0 shop://p/p5]"
    assert [p["product_id"] for p in message["products"]] == ["p2", "p5"]
    served = RecommendationServed.objects.get(pk=message["recommendation_id"])
    assert (served.surface, served.products, served.user_ref) == ("in_app", ["p2", "p5"], "u1")


@pytest.mark.django_db
def test_caps_per_session_and_per_day(shop, client):
    _project, keys = shop
    assert len(launch(client, keys, session="s1").json()["in_app"]) == 1
    assert launch(client, keys, session="s1").json()["in_app"] == []  # 1 per session
    assert len(launch(client, keys, session="s2").json()["in_app"]) == 1
    assert launch(client, keys, session="s3").json()["in_app"] == []  # 2 per day
    # Another user has caps of their own.
    assert len(launch(client, keys, user="u2", session="s9").json()["in_app"]) == 1


@pytest.mark.django_db
def test_launches_without_session_id_within_30_minutes_are_one_session(shop, client):
    _project, keys = shop
    assert len(launch(client, keys).json()["in_app"]) == 1
    assert launch(client, keys).json()["in_app"] == []


@pytest.mark.django_db
def test_other_events_get_the_plain_answer(shop, client):
    _project, keys = shop
    response = launch(client, keys, event="Product Viewed")
    assert response.json() == {"success": True}


@pytest.mark.django_db
def test_a_batch_with_a_launch_and_a_screen_launch(shop, client):
    _project, keys = shop
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p7"}},
            {"type": "screen", "userId": "u2", "name": "App Launched"},
        ]
    }
    response = client.post(
        "/v1/batch", body, content_type="application/json", HTTP_AUTHORIZATION=basic_header(keys.write_key)
    )
    assert [m["user"] for m in response.json()["in_app"]] == ["u2"]


@pytest.mark.django_db
def test_no_active_message_means_an_empty_list(shop, client):
    project, keys = shop
    InAppMessage.objects.filter(project=project).update(is_active=False)
    assert launch(client, keys).json()["in_app"] == []


@pytest.mark.django_db
def test_a_broken_template_is_refused_with_a_clear_error(project_a):
    message = InAppMessage(project=project_a[0], name="Bad", template="{% for p in %}x{% endfor %}")
    with pytest.raises(ValidationError) as info:
        message.full_clean()
    assert "template" in info.value.message_dict
    assert "Liquid template error" in info.value.message_dict["template"][0]


@pytest.mark.django_db
def test_template_output_is_html_escaped(shop, client):
    project, keys = shop
    from crm.services import profile_upsert

    profile_upsert(project_id=project.pk, user_id="u3", traits={"firstName": "<script>x</script>"})
    [message] = launch(client, keys, user="u3").json()["in_app"]
    assert "<script>" not in message["body"] and "&lt;script&gt;" in message["body"]
