"""Receipts: SendGrid's Event Webhook signed with a real ECDSA key pair (the
library's verifier), a bad or missing signature 403, a retried event stored
once, a bounce unsubscribing the address in its project only; Twilio status
callbacks checked with twilio's RequestValidator; the SDK's Notification
Clicked through the real collector endpoint; another project's token or
message never touched."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ValidationError
from django.test import Client
from twilio.request_validator import RequestValidator

from config.celery import app
from crm.models import Profile
from delivery.channels.email import channel as email_channel
from delivery.models import ChannelSettings, Message, MessageEvent
from delivery.receipts import sendgrid_webhook_url, twilio_status_url
from delivery.services import MessageIn, messages_enqueue
from tests.conftest import basic_header

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"
AUTH_TOKEN = "twilio-auth-token-of-project-a"


@pytest.fixture
def key_pair(shop) -> ec.EllipticCurvePrivateKey:
    """SendGrid's kind of key (ECDSA P-256); its public half in the project's email settings."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = ChannelSettings.objects.get(project=shop, channel="email")
    email.settings = {**email.settings, "event_webhook_public_key": base64.b64encode(public).decode()}
    email.save()
    sms = ChannelSettings.objects.get(project=shop, channel="sms")
    sms.settings = {**sms.settings, "auth_token": AUTH_TOKEN}
    sms.save()
    return private


def signed(private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str = "1780293600") -> dict[str, str]:
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": base64.b64encode(signature).decode(),
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp,
    }


def sent(project, profile, key: str, channel: str = "email") -> Message:
    messages_enqueue(
        project_id=project.pk,
        messages=[MessageIn(profile_id=profile.pk, channel=channel, idempotency_key=key, label="variant:1")],
        now=T0,
    )
    return Message.objects.get(project=project, idempotency_key=key)


def post_events(client: Client, project_id: int, private, events: list[dict], **headers):
    body = json.dumps(events).encode()
    path = sendgrid_webhook_url(project_id=project_id)[len(BASE) :]
    return client.generic("POST", path, body, content_type="application/json", **{**signed(private, body), **headers})


def sg(event: str, message: Message, event_id: str, **more) -> dict:
    return {"event": event, "email": "a@example.com", "timestamp": 1780293600, "sg_event_id": event_id,
            "message_id": str(message.pk), **more}  # fmt: skip


def test_delivered_is_stored_once_by_its_event_id_and_told_once(client, shop, make_profile, key_pair, told):
    message = sent(shop, make_profile(), "sg:1")
    told.clear()
    events = [sg("delivered", message, "ev-1"), sg("processed", message, "ev-0")]
    assert post_events(client, shop.pk, key_pair, events).status_code == 204
    assert post_events(client, shop.pk, key_pair, events).status_code == 204  # SendGrid retries the batch
    assert list(MessageEvent.objects.values_list("kind", "dedupe_key")) == [("delivered", "sg:ev-1")]
    assert [(o.message_id, o.kind, o.label) for o in told] == [(message.pk, "delivered", "variant:1")]
    assert Message.objects.get(pk=message.pk).delivered_at == datetime(2026, 6, 1, 6, 0, tzinfo=UTC)


def test_a_bounce_unsubscribes_the_address_and_is_told_with_its_reason(client, shop, make_profile, key_pair, told):
    alice = make_profile()
    message = sent(shop, alice, "sg:2")
    told.clear()
    response = post_events(client, shop.pk, key_pair, [sg("bounce", message, "ev-2", reason="550 no such user",
                                                          type="bounce")])  # fmt: skip
    assert response.status_code == 204
    assert [(o.kind, o.reason) for o in told] == [("bounced", "550 no such user")]
    assert Profile.objects.get(pk=alice.pk).email_subscribed is False


def test_spam_reports_and_unsubscribes_unsubscribe_and_opens_and_clicks_count_once(
    client, shop, make_profile, key_pair, told
):
    alice, bob = make_profile(), make_profile()
    a, b = sent(shop, alice, "sg:3"), sent(shop, bob, "sg:4")
    told.clear()
    events = [
        sg("spamreport", a, "ev-3"),
        sg("unsubscribe", b, "ev-4"),
        sg("open", a, "ev-5"),
        sg("open", a, "ev-6"),
        sg("click", a, "ev-7", url="https://shop.example/x"),
    ]
    assert post_events(client, shop.pk, key_pair, events).status_code == 204
    assert [(o.message_id, o.kind) for o in told] == [
        (a.pk, "spam_report"), (b.pk, "unsubscribed"), (a.pk, "opened"), (a.pk, "clicked"),
    ]  # fmt: skip
    assert told[-1].first_click is True
    assert list(Profile.objects.filter(pk__in=[alice.pk, bob.pk]).values_list("email_subscribed", flat=True)) == [
        False,
        False,
    ]


@pytest.mark.parametrize("how", ["unsigned", "bad signature", "another key", "tampered body"])
def test_an_unsigned_or_badly_signed_batch_is_refused_403_and_records_nothing(
    client, shop, make_profile, key_pair, told, how
):
    message = sent(shop, make_profile(), "sg:5")
    told.clear()
    path = sendgrid_webhook_url(project_id=shop.pk)[len(BASE) :]
    body = json.dumps([sg("bounce", message, "ev-8")]).encode()
    headers = signed(key_pair, body)
    if how == "unsigned":
        headers = {}
    elif how == "bad signature":
        headers["HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE"] = "bm90IGEgc2lnbmF0dXJl"
    elif how == "another key":
        headers = signed(ec.generate_private_key(ec.SECP256R1()), body)
    else:
        body = body.replace(b"bounce", b"delivered")
    response = client.generic("POST", path, body, content_type="application/json", **headers)
    assert response.status_code == 403
    assert (MessageEvent.objects.count(), told) == (0, [])
    assert Profile.objects.get(pk=message.profile_id).email_subscribed is not False


def test_a_forged_token_is_400_and_project_as_url_never_touches_project_b(
    client, shop, project_b, make_profile, key_pair, told
):
    other = project_b[0]
    bob = make_profile(other)
    theirs = Message.objects.create(project=other, profile=bob, channel="email", idempotency_key="b:1")
    body = json.dumps([sg("bounce", theirs, "ev-9")]).encode()
    assert client.generic("POST", "/hooks/sendgrid/1:forged", body, content_type="application/json",
                          **signed(key_pair, body)).status_code == 400  # fmt: skip
    # Project A's URL and key, naming project B's message: nothing happens to it.
    assert post_events(client, shop.pk, key_pair, [sg("bounce", theirs, "ev-9")]).status_code == 204
    assert (MessageEvent.objects.count(), told) == (0, [])
    assert Profile.objects.get(pk=bob.pk).email_subscribed is not False
    # Project B has no key configured: its URL refuses a batch signed with A's.
    path = sendgrid_webhook_url(project_id=other.pk)[len(BASE) :]
    assert client.generic("POST", path, body, content_type="application/json",
                          **signed(key_pair, body)).status_code == 404  # fmt: skip


def test_the_public_key_setting_is_validated_and_shown_back(key_pair):
    public = key_pair.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = {
        "api_key": "SG.x",
        "from_email": "shop@example.com",
        "event_webhook_public_key": base64.b64encode(public).decode(),
    }
    validated = email_channel.settings_validate(good)
    assert email_channel.settings_public(validated)["event_webhook_public_key"] == good["event_webhook_public_key"]
    with pytest.raises(ValidationError) as error:
        email_channel.settings_validate({**good, "event_webhook_public_key": "not-a-key"})
    assert list(error.value.message_dict) == ["event_webhook_public_key"]


# --- Twilio --------------------------------------------------------------------------


def twilio_post(client: Client, url: str, params: dict[str, str], auth_token: str = AUTH_TOKEN):
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return client.post(url[len(BASE) :], params, HTTP_X_TWILIO_SIGNATURE=signature)


def test_twilio_status_callbacks_are_validated_and_stored_once_per_sid_and_status(
    client, shop, make_profile, key_pair, told
):
    message = sent(shop, make_profile(phone="+14155550100"), "tw:1", channel="sms")
    told.clear()
    url = twilio_status_url(project_id=shop.pk, message_id=message.pk)
    base = {"MessageSid": "SM" + "a" * 32, "AccountSid": "AC" + "0" * 32}
    assert twilio_post(client, url, {**base, "MessageStatus": "sent"}).status_code == 204
    assert twilio_post(client, url, {**base, "MessageStatus": "delivered"}).status_code == 204
    assert twilio_post(client, url, {**base, "MessageStatus": "delivered"}).status_code == 204  # a retry
    assert list(MessageEvent.objects.values_list("kind", "dedupe_key")) == [
        ("delivered", f"twilio:{base['MessageSid']}:delivered")
    ]
    assert [(o.message_id, o.kind) for o in told] == [(message.pk, "delivered")]


def test_twilio_undelivered_is_told_bounced_with_the_error_code(client, shop, make_profile, key_pair, told):
    message = sent(shop, make_profile(phone="+14155550101"), "tw:2", channel="sms")
    told.clear()
    url = twilio_status_url(project_id=shop.pk, message_id=message.pk)
    params = {"MessageSid": "SM" + "b" * 32, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert twilio_post(client, url, params).status_code == 204
    assert [(o.kind, o.reason) for o in told] == [("bounced", "twilio undelivered 30003")]


def test_a_twilio_callback_with_a_bad_signature_is_403_and_records_nothing(client, shop, make_profile, key_pair, told):
    message = sent(shop, make_profile(phone="+14155550102"), "tw:3", channel="sms")
    told.clear()
    url = twilio_status_url(project_id=shop.pk, message_id=message.pk)
    params = {"MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered"}
    assert twilio_post(client, url, params, auth_token="someone-elses-token").status_code == 403
    assert client.post(url[len(BASE) :], params).status_code == 403
    assert client.post("/hooks/twilio/forged", params).status_code == 400
    assert (MessageEvent.objects.count(), told) == (0, [])


def test_the_sms_channel_passes_the_status_callback_at_claim(shop, make_profile, channels):
    from delivery.services import messages_send

    message = sent(shop, make_profile(phone="+14155550103"), "tw:4", channel="sms")
    messages_send(message_ids=[message.pk], now=T0)
    [outgoing] = channels["sms"].sent
    assert outgoing.content["status_callback"] == twilio_status_url(project_id=shop.pk, message_id=message.pk)


# --- Notification Clicked --------------------------------------------------------------


@pytest.fixture
def eager() -> Iterator[None]:
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


def clicked(client: Client, write_key: str, user: str, message_id: object, n: int):
    body = {"type": "track", "userId": user, "event": "Notification Clicked", "messageId": f"nc-{n}",
            "properties": {"message_id": message_id}}  # fmt: skip
    return client.generic("POST", "/v1/track", json.dumps(body), content_type="application/json",
                          HTTP_AUTHORIZATION=basic_header(write_key))  # fmt: skip


def test_notification_clicked_through_the_collector_is_a_click_of_the_profiles_message_once(
    eager, project_a, shop, make_profile, told
):
    keys = project_a[1]
    alice, bob = make_profile(user_id="alice"), make_profile(user_id="bob")
    push = sent(shop, alice, "nc:1", channel="push")
    told.clear()
    client = Client()
    assert clicked(client, keys.write_key, "alice", str(push.pk), 1).status_code == 200
    assert clicked(client, keys.write_key, "alice", push.pk, 2).status_code == 200  # clicked again: once
    assert clicked(client, keys.write_key, "bob", push.pk, 3).status_code == 200  # not bob's message
    assert [(o.message_id, o.kind, o.first_click) for o in told] == [(push.pk, "opened", False),
                                                                     (push.pk, "clicked", True)]  # fmt: skip
    assert sorted(MessageEvent.objects.values_list("message_id", "kind", "dedupe_key")) == [
        (push.pk, "clicked", "click:notification"),
        (push.pk, "opened", "open"),
    ]
    assert Message.objects.filter(profile=bob).count() == 0


def test_a_signed_body_that_is_not_an_array_of_events_is_400(client, shop, key_pair):
    path = sendgrid_webhook_url(project_id=shop.pk)[len(BASE) :]
    statuses = [
        client.generic("POST", path, body, content_type="application/json", **signed(key_pair, body)).status_code
        for body in (b"not json", b'{"event": "delivered"}', b"\xff\xfe")
    ]
    # Bytes that are not UTF-8 were not signed as SendGrid signs (text): they do not verify.
    assert statuses == [400, 400, 403]
    assert MessageEvent.objects.count() == 0


def test_a_twilio_token_of_project_a_never_touches_project_bs_message(
    client, shop, project_b, make_profile, key_pair, told
):
    other = project_b[0]
    theirs = Message.objects.create(project=other, profile=make_profile(other), channel="sms", idempotency_key="b:s")
    url = twilio_status_url(project_id=shop.pk, message_id=theirs.pk)
    params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "delivered"}
    assert twilio_post(client, url, params).status_code == 204
    assert (MessageEvent.objects.count(), told) == (0, [])
    theirs.refresh_from_db()
    assert theirs.delivered_at is None


def test_notification_clicked_naming_another_projects_message_records_nothing(
    eager, project_a, project_b, shop, make_profile, told
):
    keys = project_a[1]
    other = project_b[0]
    make_profile(user_id="alice")
    theirs = Message.objects.create(project=other, profile=make_profile(other, user_id="alice"), channel="push",
                                    idempotency_key="b:p")  # fmt: skip
    assert clicked(Client(), keys.write_key, "alice", theirs.pk, 9).status_code == 200
    assert (MessageEvent.objects.count(), told) == (0, [])
