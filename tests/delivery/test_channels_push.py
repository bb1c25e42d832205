"""The push channel: firebase-admin's send_each against the local FCM and token endpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from firebase_admin import messaging

from delivery.channels import Outgoing, PermanentError, TemporaryError, channel_get
from localproviders.models import OutboxMessage
from tests.localproviders.server import TIMEOUT_S, outbox_wait

push = channel_get("push")


def _token(n: int, prefix: str = "tok-") -> str:
    return f"{prefix}{n:06d}-abcdefghijklmnopqrstuvwxyz"


def _message(n: int, to: str | None = None, **content: Any) -> Outgoing:
    return Outgoing(
        message_id=n,
        idempotency_key=f"campaign:1:run:1:profile:{n}:push",
        to=to if to is not None else _token(n),
        content={"title": f"Hi {n}", "body": f"New for you {n}", **content},
    )


def _rows() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(provider="fcm").order_by("message_key"))


def test_pushes_arrive_with_title_body_image_deeplink_and_data(channel_settings):
    messages = [
        _message(1, image="https://shop.example/p/1.png", deeplink="shop://p/1", data={"sku": "SKU-1", "n": 2}),
        _message(2),
    ]

    results = push.send_batch(channel_settings["push"], messages)

    assert [(r.message_id, r.error, r.clear_token) for r in results] == [(1, None, False), (2, None, False)]
    assert all(r.provider_id.startswith("projects/engage-local/messages/") for r in results)
    rows = _rows()
    assert [(r.recipient, r.subject, r.body, r.message_key) for r in rows] == [
        (_token(1), "Hi 1", "New for you 1", "1"),
        (_token(2), "Hi 2", "New for you 2", "2"),
    ]
    sent = rows[0].request["message"]
    assert sent["notification"] == {"title": "Hi 1", "body": "New for you 1", "image": "https://shop.example/p/1.png"}
    assert sent["data"] == {"sku": "SKU-1", "n": "2", "deeplink": "shop://p/1", "engage_message_id": "1"}
    assert rows[0].headers["project_id"] == "engage-local"


def test_501_pushes_take_two_send_each_calls(channel_settings, monkeypatch):
    sizes: list[int] = []
    real = messaging.send_each

    def counting(messages: list, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(messages))
        return real(messages, *args, **kwargs)

    monkeypatch.setattr(messaging, "send_each", counting)

    results = push.send_batch(channel_settings["push"], [_message(n) for n in range(1, 502)])

    assert sizes == [500, 1]
    assert [r.error for r in results] == [None] * 501
    assert OutboxMessage.objects.filter(provider="fcm").count() == 501
    assert OutboxMessage.objects.filter(provider="fcm", duplicate=True).count() == 0


def test_dead_tokens_are_permanent_and_cleared_and_the_rest_of_the_batch_is_sent(channel_settings):
    messages = [
        _message(1, to=_token(1, "unregistered-")),
        _message(2, to=_token(2, "invalid-")),
        _message(3, to="short"),
        _message(4),
    ]

    results = push.send_batch(channel_settings["push"], messages)

    for result in results[:3]:
        assert isinstance(result.error, PermanentError) and result.error.reason == "invalid_token"
        assert result.clear_token is True
    assert results[0].error.message.startswith("FCM NOT_FOUND: Requested entity was not found.")
    assert results[1].error.message.startswith("FCM INVALID_ARGUMENT: The registration token is not a valid")
    assert results[3].error is None and results[3].clear_token is False
    assert [r.recipient for r in _rows()] == [_token(4)]


def test_server_errors_and_quota_are_temporary_and_keep_the_token(channel_settings):
    messages = [
        _message(1, to=_token(1, "fail-500-")),
        _message(2, to=_token(2, "unavailable-")),
        _message(3, to=_token(3, "rate-limit-")),
    ]

    results = push.send_batch(channel_settings["push"], messages)

    assert [type(r.error) for r in results] == [TemporaryError] * 3
    assert [r.clear_token for r in results] == [False] * 3
    assert results[0].error.message.startswith("FCM INTERNAL")
    assert results[1].error.message.startswith("FCM UNAVAILABLE")
    assert results[2].error.retry_after == 2.0
    assert _rows() == []


def test_a_timeout_is_temporary(channel_settings):
    settings = {**channel_settings["push"], "timeout_s": TIMEOUT_S}

    results = push.send_batch(settings, [_message(1, to=_token(1, "slow-"))])

    assert isinstance(results[0].error, TemporaryError)
    assert results[0].error.message.startswith("FCM DEADLINE_EXCEEDED")
    # The provider still delivers what it answers late: the reason for idempotency keys.
    assert [r.recipient for r in outbox_wait("fcm", 1)] == [_token(1, "slow-")]


def test_a_message_without_token_or_text_is_permanent_without_a_call(channel_settings):
    results = push.send_batch(channel_settings["push"], [_message(1, to=""), _message(2, title="", body="")])

    assert results[0].error.reason == "no_address"
    assert results[1].error.reason == "provider_rejected"
    assert _rows() == []


def test_settings_are_validated_naming_the_field(local_service_account_key):
    with pytest.raises(ValidationError) as raised:
        push.settings_validate({"service_account": "{not json", "fcm_url": "fcm", "timeout_s": "5"})
    assert {field: messages[0] for field, messages in raised.value.message_dict.items()} == {
        "service_account": "Must be the service account's JSON key file.",
        "fcm_url": "Must be an http:// or https:// URL.",
        "timeout_s": "Must be a number of seconds above 0, at most 60.",
    }
    broken = {
        **local_service_account_key,
        "private_key": "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n",
    }
    with pytest.raises(ValidationError) as raised:
        push.settings_validate({"service_account": broken})
    assert raised.value.message_dict["service_account"][0].startswith("Not a usable service account key")
    with pytest.raises(ValidationError) as raised:
        push.settings_validate({"service_account": {"type": "service_account", "project_id": "p"}})
    assert raised.value.message_dict == {"service_account": ["Missing private_key, client_email, token_uri."]}


def test_settings_accept_the_key_file_as_text_and_public_settings_mask_the_private_key(local_service_account_key):
    cleaned = push.settings_validate({"service_account": json.dumps(local_service_account_key)})

    assert cleaned["service_account"] == local_service_account_key
    assert cleaned["fcm_url"] == "https://fcm.googleapis.com"
    public = push.settings_public(cleaned)
    assert public["service_account"] == {
        "project_id": "engage-local",
        "client_email": "engage-push@engage-local.iam.gserviceaccount.com",
        "token_uri": local_service_account_key["token_uri"],
        "private_key": "••••",
    }
