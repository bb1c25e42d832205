"""The SMS channel: the real twilio client against the local Messages API."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from delivery.channels import Outgoing, PermanentError, TemporaryError, channel_get
from localproviders.models import OutboxMessage
from tests.localproviders.server import TIMEOUT_S, outbox_wait

sms = channel_get("sms")


def _message(n: int, to: str, text: str = "Your code: 1234") -> Outgoing:
    return Outgoing(message_id=n, idempotency_key=f"k{n}", to=to, content={"text": text})


def test_an_sms_arrives_with_its_number_sender_and_text(channel_settings):
    results = sms.send_batch(channel_settings["sms"], [_message(1, "+14155550101"), _message(2, "+14155550102", "Hé")])

    assert [r.error for r in results] == [None, None]
    assert all(r.provider_id.startswith("SM") and len(r.provider_id) == 34 for r in results)
    rows = list(OutboxMessage.objects.filter(provider="twilio").order_by("id"))
    assert [(r.recipient, r.body, r.headers["from"], r.headers["sid"]) for r in rows] == [
        ("+14155550101", "Your code: 1234", "+15005550006", results[0].provider_id),
        ("+14155550102", "Hé", "+15005550006", results[1].provider_id),
    ]
    assert rows[0].request == {"To": "+14155550101", "From": "+15005550006", "Body": "Your code: 1234"}


@pytest.mark.parametrize(
    ("to", "error_type", "reason", "code"),
    [
        ("12345", PermanentError, "no_address", "21211"),
        ("reject-+14155550101", PermanentError, "provider_rejected", "21610"),
        ("fail-500-+14155550101", TemporaryError, None, "20500"),
        ("rate-limit-+14155550101", TemporaryError, None, "20429"),
    ],
)
def test_twilio_errors_are_mapped(channel_settings, to, error_type, reason, code):
    results = sms.send_batch(channel_settings["sms"], [_message(1, to)])

    assert type(results[0].error) is error_type
    assert getattr(results[0].error, "reason", None) == reason
    assert f"(code {code})" in results[0].error.message
    assert not OutboxMessage.objects.filter(provider="twilio").exists()


def test_a_timeout_is_temporary(channel_settings):
    settings = {**channel_settings["sms"], "timeout_s": TIMEOUT_S}

    results = sms.send_batch(settings, [_message(1, "slow-+14155550101")])

    assert isinstance(results[0].error, TemporaryError)
    assert results[0].error.message.startswith("Twilio unreachable")
    assert [r.recipient for r in outbox_wait("twilio", 1)] == ["slow-+14155550101"]


def test_refused_credentials_are_permanent(channel_settings):
    settings = {**channel_settings["sms"], "account_sid": "XX" + "0" * 32}

    results = sms.send_batch(settings, [_message(1, "+14155550101")])

    assert isinstance(results[0].error, PermanentError) and results[0].error.reason == "provider_rejected"
    assert results[0].error.message == "Twilio 401 (code 20003): Unable to create record: Authenticate"
    assert not OutboxMessage.objects.filter(provider="twilio").exists()


def test_no_number_or_no_text_is_permanent_without_a_call(channel_settings):
    results = sms.send_batch(channel_settings["sms"], [_message(1, ""), _message(2, "+14155550101", "")])

    assert results[0].error.reason == "no_address"
    assert results[1].error.reason == "provider_rejected"
    assert not OutboxMessage.objects.filter(provider="twilio").exists()


def test_settings_are_validated_naming_each_field():
    with pytest.raises(ValidationError) as raised:
        sms.settings_validate({"account_sid": "AB12", "from_number": "0155", "base_url": "x"})

    assert {field: messages[0] for field, messages in raised.value.message_dict.items()} == {
        "account_sid": "A Twilio account SID is AC followed by 32 hexadecimal digits.",
        "auth_token": "This field is required.",
        "from_number": "Must be an E.164 phone number (+14155550100) or a messaging service SID (MG…).",
        "base_url": "Must be an http:// or https:// URL.",
    }


def test_settings_public_masks_the_auth_token():
    cleaned = sms.settings_validate(
        {"account_sid": "AC" + "a" * 32, "auth_token": "0123456789abcdef", "from_number": "+14155550100"}
    )

    assert cleaned["base_url"] == "https://api.twilio.com"
    assert sms.settings_public(cleaned)["auth_token"] == "••••cdef"
    assert sms.settings_public(cleaned)["account_sid"] == "AC" + "a" * 32
