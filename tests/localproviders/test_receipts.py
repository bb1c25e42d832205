"""The local SendGrid and Twilio post their receipts back to the real receipt
endpoints, signed as the real ones sign: delivered per recipient, a bounce for
`bounce…` addresses (which unsubscribes them), Twilio's delivered status
callback. Queued and flushed by the test (LOCAL_PROVIDERS_RECEIPTS=manual)."""

from __future__ import annotations

import pytest

from crm.models import Profile
from delivery.models import ChannelSettings, Message, MessageEvent
from delivery.services import MessageIn, messages_enqueue, messages_send
from localproviders.receipts import receipts_flush, receipts_pending


@pytest.fixture
def receipts_project(make_project, channel_settings, settings, local_server):
    settings.PUBLIC_BASE_URL = local_server
    receipts_flush()  # nothing left from another test
    project = make_project("Receipts")[0]
    for channel in ("email", "sms"):
        ChannelSettings.objects.create(project=project, channel=channel, settings=channel_settings[channel])
    return project


def send(project, profile, key: str, channel: str, content: dict) -> Message:
    messages_enqueue(
        project_id=project.pk,
        messages=[
            MessageIn(profile_id=profile.pk, channel=channel, idempotency_key=key, content=content, marketing=False)
        ],  # fmt: skip
    )
    message = Message.objects.get(project=project, idempotency_key=key)
    assert messages_send(message_ids=[message.pk]).sent == 1
    return message


def test_the_local_sendgrid_posts_signed_delivered_and_bounce_events(receipts_project):
    project = receipts_project
    alice = Profile.objects.create(project=project, user_id="alice", email="alice@example.com")
    bouncy = Profile.objects.create(project=project, user_id="bouncy", email="bounce-1@example.com")
    content = {"subject": "Hi", "text": "Hello"}
    a = send(project, alice, "r:a", "email", content)
    b = send(project, bouncy, "r:b", "email", content)
    assert receipts_pending() == 2  # one batch per call
    assert receipts_flush() == [204, 204]
    a.refresh_from_db()
    assert a.delivered_at is not None
    assert list(MessageEvent.objects.filter(message=b).values_list("kind", flat=True)) == ["bounced"]
    assert Profile.objects.get(pk=bouncy.pk).email_subscribed is False
    assert Profile.objects.get(pk=alice.pk).email_subscribed is not False


def test_the_local_twilio_calls_the_status_callback_signed(receipts_project):
    project = receipts_project
    bob = Profile.objects.create(project=project, user_id="bob", phone="+14155550100")
    message = send(project, bob, "r:s", "sms", {"text": "Hello"})
    assert receipts_flush() == [204]
    message.refresh_from_db()
    assert message.delivered_at is not None
    [event] = MessageEvent.objects.filter(message=message)
    assert (event.kind, event.dedupe_key) == ("delivered", f"twilio:{message.provider_id}:delivered")
