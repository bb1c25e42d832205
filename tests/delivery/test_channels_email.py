"""The email channel: the real sendgrid client against the local provider server."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from delivery.channels import Outgoing, PermanentError, TemporaryError, channel_get
from delivery.channels import email as email_module
from localproviders.models import OutboxMessage
from tests.localproviders.server import TIMEOUT_S, outbox_wait

email = channel_get("email")


def _message(n: int, to: str | None = None, **content: Any) -> Outgoing:
    return Outgoing(
        message_id=n,
        idempotency_key=f"campaign:1:run:1:profile:{n}:email",
        to=to if to is not None else f"user{n}@example.com",
        content={
            "subject": f"Hello {n}",
            "html": f"<p>Picks for user {n}</p>",
            "text": f"Picks for user {n}",
            "unsubscribe_url": f"https://shop.example/u/{n}",
            **content,
        },
    )


def _rows() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(provider="sendgrid").order_by("id"))


def test_a_batch_is_one_call_with_each_recipients_own_subject_bodies_and_unsubscribe_headers(channel_settings):
    results = email.send_batch(channel_settings["email"], [_message(1), _message(2), _message(3)])

    assert [(r.message_id, r.error) for r in results] == [(1, None), (2, None), (3, None)]
    assert len({r.provider_id for r in results}) == 1 and results[0].provider_id
    rows = _rows()
    assert [(r.recipient, r.subject, r.body, r.html, r.message_key) for r in rows] == [
        (f"user{n}@example.com", f"Hello {n}", f"Picks for user {n}", f"<p>Picks for user {n}</p>", str(n))
        for n in (1, 2, 3)
    ]
    assert len({r.call_id for r in rows}) == 1
    assert rows[1].headers == {
        "List-Unsubscribe": "<https://shop.example/u/2>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "from": "shop@example.com",
    }
    assert rows[1].request["personalization"]["custom_args"] == {
        "message_id": "2",
        "idempotency_key": "campaign:1:run:1:profile:2:email",
    }
    assert not any(r.duplicate for r in rows)


def test_1001_emails_take_two_calls_of_1000_and_1(channel_settings):
    results = email.send_batch(channel_settings["email"], [_message(n) for n in range(1, 1002)])

    assert [r.error for r in results] == [None] * 1001
    per_call = sorted(OutboxMessage.objects.filter(provider="sendgrid").values_list("call_id", flat=True), key=str)
    counts = sorted({call: per_call.count(call) for call in per_call}.values())
    assert counts == [1, 1000]
    assert OutboxMessage.objects.filter(provider="sendgrid").values("recipient").distinct().count() == 1001


def test_bodies_too_large_for_substitutions_are_batched_by_identical_content(channel_settings):
    big = "<p>" + "x" * 11_000 + "</p>"
    other = "<p>" + "y" * 11_000 + "</p>"
    messages = [
        _message(1, html=big, text="Our picks"),
        _message(2, html=big, text="Our picks"),
        _message(3, html=other, text="Our picks"),
        _message(4),
    ]

    results = email.send_batch(channel_settings["email"], messages)

    assert [r.error for r in results] == [None] * 4
    rows = {r.recipient: r for r in _rows()}
    assert rows["user1@example.com"].html == big and rows["user2@example.com"].html == big
    assert rows["user3@example.com"].html == other
    assert rows["user1@example.com"].body == "Our picks" and rows["user2@example.com"].subject == "Hello 2"
    assert rows["user4@example.com"].html == "<p>Picks for user 4</p>"
    assert rows["user1@example.com"].call_id == rows["user2@example.com"].call_id
    assert len({r.call_id for r in rows.values()}) == 3


def test_a_sendgrid_500_is_temporary_for_every_message_of_the_call(channel_settings):
    results = email.send_batch(channel_settings["email"], [_message(1), _message(2, to="fail-500-a@example.com")])

    assert all(isinstance(r.error, TemporaryError) for r in results)
    assert "SendGrid 500" in results[0].error.message
    assert _rows() == []


def test_a_rate_limit_is_temporary_with_the_time_until_the_reset(channel_settings):
    results = email.send_batch(channel_settings["email"], [_message(1, to="rate-limit-a@example.com")])

    assert isinstance(results[0].error, TemporaryError)
    assert 0 <= results[0].error.retry_after <= 2


def test_a_timeout_is_temporary(channel_settings):
    settings = {**channel_settings["email"], "timeout_s": TIMEOUT_S}

    results = email.send_batch(settings, [_message(1, to="slow-a@example.com")])

    assert isinstance(results[0].error, TemporaryError)
    assert "unreachable" in results[0].error.message
    # The provider still delivers what it answers late: the reason for idempotency keys.
    assert [r.recipient for r in outbox_wait("sendgrid", 1)] == ["slow-a@example.com"]


def test_a_rejected_recipient_is_permanent_and_the_others_are_sent_again_without_it(channel_settings):
    messages = [_message(1), _message(2, to="reject-b@example.com"), _message(3, to="not-an-address")]

    results = email.send_batch(channel_settings["email"], messages)

    assert results[0].error is None
    assert isinstance(results[1].error, PermanentError) and results[1].error.reason == "no_address"
    assert isinstance(results[2].error, PermanentError) and results[2].error.reason == "no_address"
    assert results[1].error.message == "SendGrid 400: The email address is rejected (local test hook reject-)."
    # Refused before the call: SendGrid would 400 the whole call for it.
    assert results[2].error.message == "SendGrid refuses this address: not a valid email address"
    assert [r.recipient for r in _rows()] == ["user1@example.com"]


def test_an_address_sendgrid_refuses_fails_without_costing_the_others_a_second_call(channel_settings, monkeypatch):
    calls = []
    real = email_module._send_call
    monkeypatch.setattr(email_module, "_send_call", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))

    results = email.send_batch(channel_settings["email"], [_message(1), _message(2, to="noah.müller9@example.com")])

    assert results[0].error is None
    assert isinstance(results[1].error, PermanentError) and results[1].error.reason == "no_address"
    assert calls == [1]
    assert [r.recipient for r in _rows()] == ["user1@example.com"]


def test_a_refused_api_key_is_permanent_for_every_message(channel_settings):
    settings = {**channel_settings["email"], "api_key": "not-a-sendgrid-key"}

    results = email.send_batch(settings, [_message(1), _message(2)])

    assert all(isinstance(r.error, PermanentError) and r.error.reason == "provider_rejected" for r in results)
    assert "401" in results[0].error.message
    assert _rows() == []


def test_a_message_without_an_address_is_permanent_without_a_call(channel_settings):
    results = email.send_batch(channel_settings["email"], [_message(1, to=""), _message(2)])

    assert isinstance(results[0].error, PermanentError) and results[0].error.reason == "no_address"
    assert results[1].error is None
    assert [r.recipient for r in _rows()] == ["user2@example.com"]


def test_settings_are_validated_naming_each_field():
    with pytest.raises(ValidationError) as raised:
        email.settings_validate({"api_key": "abc", "from_email": "nope", "host": "ftp://x", "timeout_s": 0, "x": 1})

    assert {field: messages[0] for field, messages in raised.value.message_dict.items()} == {
        "api_key": "A SendGrid API key starts with 'SG.'.",
        "from_email": "Enter a valid email address.",
        "host": "Must be an http:// or https:// URL.",
        "timeout_s": "Must be a number of seconds above 0, at most 60.",
        "x": "Unknown setting.",
    }
    with pytest.raises(ValidationError) as raised:
        email.settings_validate({})
    assert set(raised.value.message_dict) == {"api_key", "from_email"}


def test_settings_public_masks_the_api_key():
    cleaned = email.settings_validate({"api_key": "SG.abcdefghijklmnop", "from_email": "a@b.example"})

    assert cleaned == {
        "api_key": "SG.abcdefghijklmnop",
        "from_email": "a@b.example",
        "host": "https://api.sendgrid.com",
        "timeout_s": 10.0,
    }
    assert email.settings_public(cleaned)["api_key"] == "••••mnop"
