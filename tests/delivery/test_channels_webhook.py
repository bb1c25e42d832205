"""The webhook channel: Standard Webhooks signatures, verified by the local receiver."""

from __future__ import annotations

import base64
import socket

import pytest
from django.core.exceptions import ValidationError

from delivery.channels import Outgoing, PermanentError, TemporaryError, channel_get
from localproviders.channel_settings import local_webhook_url
from localproviders.models import OutboxMessage
from tests.localproviders.server import TIMEOUT_S, outbox_wait

webhook = channel_get("webhook")


def _message(n: int, url: str, body: object = None) -> Outgoing:
    return Outgoing(
        message_id=n,
        idempotency_key=f"campaign:7:run:1:profile:{n}:webhook",
        to=url,
        content={"body": body if body is not None else {"user": f"u{n}", "items": [1, 2], "note": "café"}},
    )


def test_a_webhook_arrives_signed_and_verified_with_its_idempotency_key_as_id(channel_settings, local_server):
    url = local_webhook_url(base_url=local_server, name="orders")

    results = webhook.send_batch(channel_settings["webhook"], [_message(1, url)])

    assert results[0].error is None
    row = OutboxMessage.objects.get(provider="webhook")
    assert row.recipient == "orders"
    assert row.signature_valid is True
    assert row.duplicate is False
    assert row.message_key == "campaign:7:run:1:profile:1:webhook"
    assert row.request == {"body": {"user": "u1", "items": [1, 2], "note": "café"}}
    assert row.body == '{"user":"u1","items":[1,2],"note":"café"}'
    assert row.headers["webhook-id"] == "campaign:7:run:1:profile:1:webhook"
    assert row.headers["webhook-signature"].startswith("v1,")
    assert row.headers["content-type"] == "application/json"


def test_a_message_sent_twice_is_recorded_as_a_duplicate(channel_settings, local_server):
    url = local_webhook_url(base_url=local_server, name="orders")

    webhook.send_batch(channel_settings["webhook"], [_message(1, url), _message(2, url)])
    webhook.send_batch(channel_settings["webhook"], [_message(1, url)])

    assert list(
        OutboxMessage.objects.filter(provider="webhook").order_by("id").values_list("message_key", "duplicate")
    ) == [
        ("campaign:7:run:1:profile:1:webhook", False),
        ("campaign:7:run:1:profile:2:webhook", False),
        ("campaign:7:run:1:profile:1:webhook", True),
    ]


@pytest.mark.parametrize(
    ("name", "error_type", "status"),
    [
        ("fail-500-x", TemporaryError, 500),
        ("rate-limit-x", TemporaryError, 429),
        ("gone-x", PermanentError, 410),
        ("reject-x", PermanentError, 400),
    ],
)
def test_answers_are_mapped(channel_settings, local_server, name, error_type, status):
    results = webhook.send_batch(
        channel_settings["webhook"], [_message(1, local_webhook_url(base_url=local_server, name=name))]
    )

    assert type(results[0].error) is error_type
    assert results[0].error.message.startswith(f"webhook answered {status}")
    assert not OutboxMessage.objects.filter(provider="webhook").exists()
    if status == 429:
        assert results[0].error.retry_after == 2.0


def test_a_timeout_and_a_refused_connection_are_temporary(channel_settings, local_server):
    settings = {**channel_settings["webhook"], "timeout_s": TIMEOUT_S}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    results = webhook.send_batch(
        settings,
        [
            _message(1, local_webhook_url(base_url=local_server, name="slow-x")),
            _message(2, f"http://127.0.0.1:{closed_port}/hook"),
        ],
    )

    assert [type(r.error) for r in results] == [TemporaryError, TemporaryError]
    assert all(r.error.message.startswith("webhook unreachable") for r in results)
    assert [(r.recipient, r.signature_valid) for r in outbox_wait("webhook", 1)] == [("slow-x", True)]


def test_a_signature_with_another_secret_is_refused_and_recorded_unverified(channel_settings, local_server):
    other = {**channel_settings["webhook"], "secret": "whsec_" + base64.b64encode(b"another secret!!").decode()}

    results = webhook.send_batch(other, [_message(1, local_webhook_url(base_url=local_server, name="orders"))])

    assert isinstance(results[0].error, PermanentError)
    assert results[0].error.message.startswith("webhook answered 401")
    row = OutboxMessage.objects.get(provider="webhook")
    assert row.signature_valid is False


def test_a_message_without_a_url_or_with_a_body_that_is_not_json_is_permanent(channel_settings):
    results = webhook.send_batch(
        channel_settings["webhook"], [_message(1, "ftp://x"), _message(2, "http://127.0.0.1:9/", body={1, 2})]
    )

    assert results[0].error.reason == "no_address"
    assert results[1].error.message.startswith("the webhook body is not JSON")


def test_settings_are_validated_and_the_secret_masked():
    with pytest.raises(ValidationError) as raised:
        webhook.settings_validate({"timeout_s": 61})
    assert {field: messages[0] for field, messages in raised.value.message_dict.items()} == {
        "secret": "This field is required.",
        "timeout_s": "Must be a number of seconds above 0, at most 60.",
    }
    with pytest.raises(ValidationError) as raised:
        webhook.settings_validate({"secret": "whsec_!!!"})
    assert raised.value.message_dict == {"secret": ["Must be a Standard Webhooks secret: whsec_ followed by base64."]}
    cleaned = webhook.settings_validate({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    assert cleaned == {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "timeout_s": 10.0}
    assert webhook.settings_public(cleaned)["secret"] == "••••LaSw"


def test_a_nul_character_in_the_body_is_stored_replaced(channel_settings, local_server):
    url = local_webhook_url(base_url=local_server, name="orders")

    results = webhook.send_batch(channel_settings["webhook"], [_message(1, url, body={"note": "a\x00b"})])

    assert results[0].error is None
    row = OutboxMessage.objects.get(provider="webhook")
    assert row.signature_valid is True
    assert row.body == '{"note":"a\\u0000b"}'
    assert row.request == {"body": {"note": "a\ufffdb"}}
