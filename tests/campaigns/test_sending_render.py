"""Rendering a variant's channel templates into delivery content."""

from __future__ import annotations

import pytest

from campaigns.sending.context import recommendations_config
from campaigns.sending.render import RenderError, profile_render, sms_segments, variant_render
from campaigns.templating import template_render
from crm.models import Profile
from recommendations.serving import ServeFilters, recommendations_for_user
from tests.campaigns.sending_fixtures import shop_catalog
from tests.recommendations.serving_data import user_write

CONTEXT = {"user": {"first_name": "Ada & <Bob>", "email": "ada@example.com"}, "unsubscribe_url": "https://x/u/t"}


def test_one_environment_html_escapes_and_text_does_not():
    assert template_render("{{ user.first_name }}", CONTEXT, html=True) == "Ada &amp; &lt;Bob&gt;"
    assert template_render("{{ user.first_name }}", CONTEXT, html=False) == "Ada & <Bob>"
    # The same compiled template both ways, the literal markup untouched.
    assert template_render("<b>{{ user.first_name }}</b>", CONTEXT, html=False) == "<b>Ada & <Bob></b>"


def test_email_content():
    content = {
        "subject": "{{ user.first_name }}!",
        "html": "<p>{{ user.first_name }}</p>",
        "text": "{{ user.first_name }}",
        "from_email": "shop@example.com",
        "reply_to": "help@example.com",
    }
    assert variant_render(channel="email", content=content, context=CONTEXT) == {
        "subject": "Ada & <Bob>!",
        "html": "<p>Ada &amp; &lt;Bob&gt;</p>",
        "text": "Ada & <Bob>",
        "from_email": "shop@example.com",
        "reply_to": "help@example.com",
        "unsubscribe_url": "https://x/u/t",
    }


def test_push_sms_in_app_content():
    push = {"title": "Hi {{ user.first_name }}", "body": "b", "deeplink": "app://x", "data": {"k": "{{ user.email }}"}}
    assert variant_render(channel="push", content=push, context=CONTEXT) == {
        "title": "Hi Ada & <Bob>",
        "body": "b",
        "deeplink": "app://x",
        "data": {"k": "ada@example.com"},
    }
    assert variant_render(channel="sms", content={"text": "{{ user.first_name }}"}, context=CONTEXT) == {
        "text": "Ada & <Bob>"
    }
    assert variant_render(channel="in_app", content={"html": "<i>{{ user.first_name }}</i>"}, context=CONTEXT) == {
        "html": "<i>Ada &amp; &lt;Bob&gt;</i>"
    }


def test_webhook_body_is_rendered_then_parsed():
    content = {"url": "https://hook.example/{{ user.email }}", "body": '{"name": "{{ user.email }}", "n": 2}'}
    assert variant_render(channel="webhook", content=content, context=CONTEXT) == {
        "url": "https://hook.example/ada@example.com",
        "body": {"name": "ada@example.com", "n": 2},
    }
    bad = {"url": "https://h", "body": '{"name": {{ user.email }}}'}
    with pytest.raises(RenderError) as caught:
        variant_render(channel="webhook", content=bad, context=CONTEXT)
    assert caught.value.field == "body"
    assert "not JSON after rendering" in caught.value.message


def test_errors_name_the_field():
    with pytest.raises(RenderError, match=r"^subject: is required$"):
        variant_render(channel="email", content={"text": "x"}, context=CONTEXT)
    with pytest.raises(RenderError, match=r"^subject: renders empty$"):
        variant_render(channel="email", content={"subject": "{{ user.nothing }}", "text": "x"}, context=CONTEXT)
    with pytest.raises(RenderError, match=r"^text: LiquidSyntaxError"):
        variant_render(channel="sms", content={"text": "{% if %}"}, context=CONTEXT)
    with pytest.raises(RenderError, match=r"^title: is required$"):
        variant_render(channel="push", content={"image": "x"}, context=CONTEXT)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("é" * 160, 1),  # in the GSM-7 basic set
        ("ł" * 70, 1),  # not GSM-7: UCS-2
        ("ł" * 71, 2),
        ("ł" * 134, 2),
        ("ł" * 135, 3),
        ("😀" * 35, 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


def test_recommendation_filters_are_checked_naming_the_key():
    config = recommendations_config(
        {"limit": 2, "category": "Shoes", "min_price": "10", "properties": {"color": "red"}}
    )
    assert config.limit == 2
    assert config.filters.categories == ("Shoes",)
    assert config.filters.properties == (("color", ("red",)),)
    for raw, message in [
        ({"limit": 0}, "recommendations.limit"),
        ({"limit": "3"}, "recommendations.limit"),
        ({"max_price": "cheap"}, "recommendations.max_price"),
        ({"colour": 1}, "recommendations.colour: unknown key"),
        ({"exclude": "p1"}, "recommendations.exclude"),
        ({"in_stock": "yes"}, "recommendations.in_stock"),
    ]:
        with pytest.raises(ValueError, match=message):
            recommendations_config(raw)


@pytest.mark.django_db
def test_profile_render_uses_the_users_recommendations_with_property_filters(project_a):
    project = project_a[0]
    shop_catalog(project.pk)
    pid = user_write(project.pk, "u1", viewed=["p3", "p1"])
    Profile.objects.filter(pk=pid).update(traits={"firstName": "Ada"})
    content = {"title": "{{ user.first_name }}", "body": "{% for p in recommendations %}{{ p.id }} {% endfor %}"}
    rendered = profile_render(
        project_id=project.pk,
        channel="push",
        content=content,
        recommendations={"limit": 2, "properties": {"color": "red"}},
        profile_id=pid,
    )
    # Red products only (the filter goes to the database, as in the API): as the serving code answers.
    served = recommendations_for_user(
        project_id=project.pk, user_id="u1", limit=2, filters=ServeFilters(properties=(("color", ("red",)),))
    )
    assert rendered["title"] == "Ada"
    assert rendered["body"].split() == [p.product_id for p in served.products]
    assert rendered["body"].split()[0] == "p4"  # related to p3 (0.8 x 0.6); p2 (blue) does not pass
    with pytest.raises(RenderError, match="profile: 999999 is not a profile"):
        profile_render(project_id=project.pk, channel="push", content=content, recommendations={}, profile_id=999_999)


@pytest.mark.django_db
def test_the_product_filter_finds_a_catalog_product_by_id(project_a):
    project = project_a[0]
    shop_catalog(project.pk)
    pid = user_write(project.pk, "u1")
    content = {
        "text": '{% assign p = "p6" | product %}{{ p.name }} {{ p.price }} {{ p.category }}'
        ' / {% assign q = "nope" | product %}{{ q.name | default: "none" }}'
    }
    rendered = profile_render(project_id=project.pk, channel="sms", content=content, recommendations={}, profile_id=pid)
    assert rendered == {"text": "Product p6 12.0 Socks / none"}
