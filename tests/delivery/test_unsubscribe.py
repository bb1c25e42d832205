"""Signed unsubscribe links: the confirmation page (GET changes nothing), the
RFC 8058 one-click POST without a CSRF token, bad tokens refused with nothing
changed, and the link every marketing email gets at claim (its List-Unsubscribe
headers at the local SendGrid, and the POST to it unsubscribing that profile)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.test import Client

from crm.models import Device, Profile
from delivery.models import ChannelSettings, Message
from delivery.services import MessageIn, messages_enqueue, messages_send
from delivery.unsubscribe import UnsubscribeTarget, unsubscribe_target, unsubscribe_token, unsubscribe_url
from localproviders.models import OutboxMessage

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def browser() -> Client:
    # As a mailbox provider's one-click POST arrives: no cookie, no CSRF token.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def alice(project_a) -> Profile:
    return Profile.objects.create(
        project=project_a[0], user_id="alice", email="alice@example.com", email_subscribed=True, push_subscribed=True
    )


def _path(profile: Profile, channel: str = "email") -> str:
    return urlsplit(unsubscribe_url(project_id=profile.project_id, profile_id=profile.pk, channel=channel)).path


def _subscriptions(profile: Profile) -> tuple[bool | None, bool | None]:
    profile.refresh_from_db()
    return profile.email_subscribed, profile.push_subscribed


def test_a_token_is_djangos_signer_format_and_the_same_every_time(settings):
    token = unsubscribe_token(project_id=3, profile_id=99, channel="push")

    assert token == signing.Signer(salt="delivery.unsubscribe").sign_object([3, 99, "push"])
    assert token == unsubscribe_token(project_id=3, profile_id=99, channel="push")
    assert unsubscribe_target(token) == UnsubscribeTarget(project_id=3, profile_id=99, channel="push")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert unsubscribe_target(token) is None  # signed by another deployment
    assert unsubscribe_token(project_id=3, profile_id=99, channel="push") != token


@pytest.mark.django_db
def test_the_link_shows_a_confirmation_page_and_changes_nothing(browser, alice):
    response = browser.get(_path(alice))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Stop marketing messages by email?" in page
    assert '<form method="post">' in page and 'name="List-Unsubscribe" value="One-Click"' in page
    assert _subscriptions(alice) == (True, True)


@pytest.mark.django_db
def test_a_one_click_post_without_a_csrf_token_unsubscribes_that_channel_only(browser, alice):
    response = browser.post(_path(alice), ONE_CLICK)

    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert _subscriptions(alice) == (False, True)
    # A second click (the mailbox provider retrying) is answered the same.
    assert browser.post(_path(alice), ONE_CLICK).status_code == 200
    assert _subscriptions(alice) == (False, True)


@pytest.mark.django_db
def test_a_push_link_unsubscribes_push(browser, alice):
    assert browser.post(_path(alice, "push"), ONE_CLICK).status_code == 200
    assert _subscriptions(alice) == (True, False)


@pytest.mark.django_db
def test_a_tampered_token_is_400_and_changes_nothing(browser, alice):
    token = unsubscribe_token(project_id=alice.project_id, profile_id=alice.pk)
    other = Profile.objects.create(project_id=alice.project_id, user_id="bob", email_subscribed=True)
    # The same signature on another profile's ids.
    forged = signing.dumps([alice.project_id, other.pk, "email"], salt="another salt").split(":")[0]
    forged += ":" + token.split(":", 1)[1]
    for path in (f"/u/{token[:-2]}xx", f"/u/{forged}", "/u/not-a-token"):
        assert browser.get(path).status_code == 400, path
        response = browser.post(path, ONE_CLICK)
        assert response.status_code == 400, path
        assert "This unsubscribe link is not valid." in response.content.decode()
    assert _subscriptions(alice) == (True, True)
    other.refresh_from_db()
    assert other.email_subscribed is True


@pytest.mark.django_db
def test_a_post_without_the_one_click_body_is_400_and_changes_nothing(browser, alice):
    response = browser.post(_path(alice), {"something": "else"})

    assert response.status_code == 400
    assert "List-Unsubscribe=One-Click" in response.content.decode()
    assert _subscriptions(alice) == (True, True)


@pytest.mark.django_db
def test_a_token_naming_a_profile_of_another_project_or_a_channel_without_subscriptions_is_refused(
    browser, alice, project_b
):
    elsewhere = unsubscribe_url(project_id=project_b[0].pk, profile_id=alice.pk)
    assert browser.post(urlsplit(elsewhere).path, ONE_CLICK).status_code == 404
    webhook = _path(alice, "webhook")
    assert browser.post(webhook, ONE_CLICK).status_code == 400
    assert _subscriptions(alice) == (True, True)


@pytest.mark.django_db
def test_marketing_emails_get_the_profiles_link_at_claim_unless_the_caller_gave_one(shop, make_profile, channels):
    alice, bob = make_profile(), make_profile()
    Device.objects.create(project=shop, profile=alice, device_id="d1", push_token="tok-alice")
    content = {"subject": "Hi", "text": "Hello"}
    messages_enqueue(
        project_id=shop.pk,
        messages=[
            MessageIn(profile_id=alice.pk, channel="email", idempotency_key="m:1", content=content),
            MessageIn(profile_id=bob.pk, channel="email", idempotency_key="m:2",
                      content={**content, "unsubscribe_url": "https://shop.example/prefs"}),
            MessageIn(profile_id=alice.pk, channel="email", idempotency_key="t:1", content=content, marketing=False),
            MessageIn(profile_id=alice.pk, channel="push", idempotency_key="p:1", content={"title": "Hi"}),
        ],
    )  # fmt: skip
    messages_send(message_ids=list(Message.objects.values_list("pk", flat=True)))

    sent = {m.idempotency_key: m.content for call in channels["email"].calls + channels["push"].calls for m in call}
    target = unsubscribe_target(urlsplit(sent["m:1"]["unsubscribe_url"]).path.removeprefix("/u/"))
    assert (target.project_id, target.profile_id, target.channel) == (shop.pk, alice.pk, "email")
    assert sent["m:1"]["subject"] == "Hi"
    assert sent["m:2"]["unsubscribe_url"] == "https://shop.example/prefs"
    assert "unsubscribe_url" not in sent["t:1"]  # transactional
    assert "unsubscribe_url" not in sent["p:1"]


def test_the_local_sendgrid_gets_the_one_click_headers_and_posting_to_them_unsubscribes(
    local_server, channel_settings, project_a, browser
):
    project = project_a[0]
    ChannelSettings.objects.create(project=project, channel="email", settings=channel_settings["email"])
    alice = Profile.objects.create(project=project, user_id="alice", email="alice@example.com", email_subscribed=True)
    first = MessageIn(profile_id=alice.pk, channel="email", idempotency_key="c:1:alice",
                      content={"subject": "Picks", "html": "<p>Picks</p>", "text": "Picks"})  # fmt: skip
    messages_enqueue(project_id=project.pk, messages=[first])
    assert messages_send(message_ids=list(Message.objects.values_list("pk", flat=True))).sent == 1

    row = OutboxMessage.objects.get(provider="sendgrid")
    link = row.headers["List-Unsubscribe"]
    assert row.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link == f"<{unsubscribe_url(project_id=project.pk, profile_id=alice.pk)}>"
    # What a mailbox provider does with those headers.
    assert browser.post(urlsplit(link.strip("<>")).path, ONE_CLICK).status_code == 200
    second = MessageIn(profile_id=alice.pk, channel="email", idempotency_key="c:2:alice", content=first.content)
    messages_enqueue(project_id=project.pk, messages=[second])
    assert messages_send(message_ids=list(Message.objects.values_list("pk", flat=True))).sent == 0
    assert Message.objects.get(idempotency_key="c:2:alice").skip_reason == "unsubscribed"
    assert OutboxMessage.objects.filter(provider="sendgrid").count() == 1
