"""Opens and clicks: the pixel and tracked links through the real URLs, stored
and told once, the first click, the product and slot of a recommendation, the
implied open; tampered, malformed and hostile tokens refused with a 4xx and
no redirect; another project's message never touched; links_track's exact
output per channel."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from django.core import signing

from delivery.models import Message, MessageEvent
from delivery.services import MessageIn, messages_enqueue
from delivery.tracking import PIXEL_GIF, _token, click_url, links_track, open_url

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"


@pytest.fixture
def message(shop, make_profile, channels) -> Message:
    messages_enqueue(
        project_id=shop.pk,
        messages=[
            MessageIn(
                profile_id=make_profile().pk,
                channel="email",
                idempotency_key="t:1",
                label="variant:7",
                items=["P1", "P2"],
                content={"subject": "s", "text": "t"},
            )
        ],  # fmt: skip
        now=T0,
    )
    return Message.objects.get(idempotency_key="t:1")


def path_of(url: str) -> str:
    assert url.startswith(BASE)
    return url[len(BASE) :]


def test_tokens_are_djangos_signer_format(settings):
    token = _token([3, 5, "https://shop.example/a"])
    assert signing.Signer(salt="delivery.tracking").unsign_object(token) == [3, 5, "https://shop.example/a"]
    settings.SECRET_KEY = "another-secret-key-" * 3
    with pytest.raises(signing.BadSignature):
        signing.Signer(salt="delivery.tracking").unsign_object(token)


def test_the_pixel_records_the_first_open_once(client, message, told):
    url = path_of(open_url(project_id=message.project_id, message_id=message.pk))
    for _ in range(2):
        response = client.get(url)
        assert (response.status_code, response["Content-Type"], response.content) == (200, "image/gif", PIXEL_GIF)
        assert "no-store" in response["Cache-Control"]
    assert list(MessageEvent.objects.values_list("message_id", "kind", "dedupe_key")) == [
        (message.pk, "opened", "open")
    ]
    assert [(o.message_id, o.kind, o.label, o.items) for o in told] == [
        (message.pk, "opened", "variant:7", ("P1", "P2"))
    ]
    assert Message.objects.get(pk=message.pk).opened_at is not None


def test_a_click_redirects_records_once_and_implies_the_open(client, message, told):
    product = path_of(click_url(project_id=message.project_id, message_id=message.pk,
                                url="https://shop.example/p/P2?utm=x", product_id="P2", slot=2))  # fmt: skip
    other = path_of(click_url(project_id=message.project_id, message_id=message.pk, url="https://shop.example/"))
    response = client.get(product)
    assert (response.status_code, response["Location"]) == (302, "https://shop.example/p/P2?utm=x")
    assert [(o.kind, o.item, o.slot, o.first_click) for o in told] == [("opened", "", None, False),
                                                                       ("clicked", "P2", 2, True)]  # fmt: skip
    told.clear()
    assert client.get(product).status_code == 302  # the same link again: stored and told nothing
    assert told == []
    assert client.get(other)["Location"] == "https://shop.example/"
    assert [(o.kind, o.item, o.slot, o.first_click) for o in told] == [("clicked", "", None, False)]
    link_key = "click:" + hashlib.sha256(b"https://shop.example/").hexdigest()[:16]
    assert {e.dedupe_key: (e.kind, e.data) for e in MessageEvent.objects.all()} == {
        "click:2": (
            "clicked",
            {"url": "https://shop.example/p/P2?utm=x", "via": "link", "product_id": "P2", "slot": 2},
        ),
        link_key: ("clicked", {"url": "https://shop.example/", "via": "link"}),
        "open": ("opened", {"via": "click"}),
    }
    m = Message.objects.get(pk=message.pk)
    assert m.clicked_at is not None and m.opened_at == m.clicked_at


@pytest.mark.parametrize(
    "token",
    [
        "WzMsNSwiaHR0cHM6Ly9ldmlsLmV4YW1wbGUvIl0:forged-signature",
        "not-a-token",
        "%00",
        "a" * 7000,
        "WzMsNV0%00:abc",
    ],
)
def test_tampered_malformed_and_hostile_tokens_answer_400_and_redirect_nowhere(client, message, token, told):
    for prefix in ("/t/c/", "/t/o/"):
        response = client.get(prefix + token)
        assert response.status_code == 400
        assert "Location" not in response
    assert (MessageEvent.objects.count(), told) == (0, [])


def test_a_token_with_its_url_changed_is_refused(client, message):
    good = click_url(project_id=message.project_id, message_id=message.pk, url="https://shop.example/")
    value, signature = path_of(good)[len("/t/c/") :].split(":")
    evil = signing.b64_encode(f'[{message.project_id},{message.pk},"https://evil.example/"]'.encode()).decode()
    response = client.get(f"/t/c/{evil}:{signature}")
    assert response.status_code == 400 and "Location" not in response


def test_a_pixel_token_is_no_link_and_a_link_token_no_pixel(client, message):
    pixel = path_of(open_url(project_id=message.project_id, message_id=message.pk))
    link = path_of(click_url(project_id=message.project_id, message_id=message.pk, url="https://shop.example/"))
    assert client.get(pixel.replace("/t/o/", "/t/c/")).status_code == 400
    assert client.get(link.replace("/t/c/", "/t/o/")).status_code == 400
    assert MessageEvent.objects.count() == 0


def test_a_token_of_project_a_never_touches_project_bs_message(client, project_b, make_profile, message, told):
    other = Message.objects.create(project=project_b[0], profile=make_profile(project_b[0]), channel="email",
                                   idempotency_key="b:1")  # fmt: skip
    # A token signed for project A naming B's message id: recorded nowhere.
    link = path_of(click_url(project_id=message.project_id, message_id=other.pk, url="https://shop.example/"))
    assert client.get(link).status_code == 302
    assert client.get(path_of(open_url(project_id=message.project_id, message_id=other.pk))).status_code == 200
    assert (MessageEvent.objects.count(), told) == (0, [])
    other.refresh_from_db()
    assert (other.opened_at, other.clicked_at) == (None, None)


# --- links_track ------------------------------------------------------------------------


def c(url: str, product: str = "", slot: int | None = None) -> str:
    return click_url(project_id=3, message_id=5, url=url, product_id=product, slot=slot)


def test_email_html_links_are_tracked_and_the_pixel_goes_before_the_body_end():
    document = (
        '<html><body><a href="https://shop.example/p/1?a=1&amp;b=2">One</a> '
        "<a title=\"x href=y\" href='http://x.example/'>x</a>\n"
        '<a href=mailto:a@b.c>m</a><a href="#top">t</a><a href="tel:+1">t</a>'
        "<A HREF=https://u.example/z>z</A>"
        '<a href="http://127.0.0.1:8000/u/abc">unsubscribe</a><a name="n">n</a></BODY></html>'
    )
    out = links_track(channel="email", content={"subject": "s", "html": document}, message_id=5, project_id=3,
                      item_urls={"https://shop.example/p/1?a=1&b=2": ("P1", 1)})  # fmt: skip
    pixel = f'<img src="{open_url(project_id=3, message_id=5)}" width="1" height="1" alt="" style="display:none">'
    assert out == {
        "subject": "s",
        "html": (
            f'<html><body><a href="{c("https://shop.example/p/1?a=1&b=2", "P1", 1)}">One</a> '
            f"<a title=\"x href=y\" href='{c('http://x.example/')}'>x</a>\n"
            '<a href=mailto:a@b.c>m</a><a href="#top">t</a><a href="tel:+1">t</a>'
            f'<A HREF="{c("https://u.example/z")}">z</A>'
            f'<a href="http://127.0.0.1:8000/u/abc">unsubscribe</a><a name="n">n</a>{pixel}</BODY></html>'
        ),
    }


def test_links_in_comments_scripts_styles_and_attribute_values_are_not_links():
    """What HTML does not read as an <a> tag is left as it is: a comment, the raw
    text of <script> and <style>, and "<a href" or ">" inside a quoted value;
    <abbr> and <area> are not <a>."""
    document = (
        '<!-- <a href="https://c.example/"> --><script>var s = "<a href=\'https://s.example/\'>";</script>'
        '<STYLE>a[href="https://st.example/"]{}</STYLE><abbr href="https://ab.example/">x</abbr>'
        '<a data-x="> <a href=https://v.example/" href="https://real.example/">r</a>'
    )
    out = links_track(channel="in_app", content={"html": document}, message_id=5, project_id=3)
    assert out == {
        "html": (
            '<!-- <a href="https://c.example/"> --><script>var s = "<a href=\'https://s.example/\'>";</script>'
            '<STYLE>a[href="https://st.example/"]{}</STYLE><abbr href="https://ab.example/">x</abbr>'
            f'<a data-x="> <a href=https://v.example/" href="{c("https://real.example/")}">r</a>'
        )
    }


def test_email_text_and_sms_urls_are_tracked_without_their_trailing_punctuation():
    text = "See https://shop.example/a. Or (http://x.example/b)! mailto:a@b.c"
    expected = f"See {c('https://shop.example/a')}. Or ({c('http://x.example/b')})! mailto:a@b.c"
    assert links_track(channel="sms", content={"text": text}, message_id=5, project_id=3) == {"text": expected}
    email = links_track(channel="email", content={"subject": "s", "text": text}, message_id=5, project_id=3)
    assert email == {"subject": "s", "text": expected}  # no HTML: no pixel


def test_an_email_without_a_body_tag_gets_the_pixel_at_the_end():
    out = links_track(channel="email", content={"html": "<p>Hi</p>"}, message_id=5, project_id=3)
    assert out["html"] == (
        f'<p>Hi</p><img src="{open_url(project_id=3, message_id=5)}" width="1" height="1" alt="" style="display:none">'
    )


def test_push_deeplink_and_link_like_data_are_tracked_and_other_data_left_alone():
    content = {"title": "t", "deeplink": "https://shop.example/p/2",
               "data": {"product_url": "https://shop.example/p/3", "coupon": "https://x.example/not-a-link-key",
                        "link": "app://open"}}  # fmt: skip
    out = links_track(channel="push", content=content, message_id=5, project_id=3,
                      item_urls={"https://shop.example/p/2": ("P2", 1)})  # fmt: skip
    assert out == {
        "title": "t",
        "deeplink": c("https://shop.example/p/2", "P2", 1),
        "data": {
            "product_url": c("https://shop.example/p/3"),
            "coupon": "https://x.example/not-a-link-key",
            "link": "app://open",
        },  # fmt: skip
    }


def test_in_app_html_is_tracked_without_a_pixel_and_webhooks_are_left_alone():
    out = links_track(channel="in_app", content={"html": '<a href="https://s.example/">go</a>'}, message_id=5,
                      project_id=3)  # fmt: skip
    assert out == {"html": f'<a href="{c("https://s.example/")}">go</a>'}
    hook = {"url": "https://hooks.example/x", "body": {"link": "https://s.example/"}}
    assert links_track(channel="webhook", content=hook, message_id=5, project_id=3) == hook
