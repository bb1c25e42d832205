"""Provider outages on demand (localproviders.faults): the real client
libraries meet a 500 or a hang for the faulted providers only, nothing is
stored meanwhile, every refused request is logged with its message keys, and
the provider recovers when the fault ends or is cleared."""

from __future__ import annotations

import time

import pytest

from delivery.channels import Outgoing, TemporaryError, channel_get
from localproviders.faults import fault_clear, fault_set, refusals
from localproviders.models import OutboxMessage
from tests.localproviders.server import SLOW_MS, TIMEOUT_S


@pytest.fixture(autouse=True)
def _no_fault_left():  # noqa: ANN202
    fault_clear()
    yield
    fault_clear()


def _email(n: int) -> Outgoing:
    return Outgoing(n, f"k:{n}:email", f"u{n}@example.com", {"subject": "Hi", "text": f"Picks {n}"})


def _push(n: int) -> Outgoing:
    return Outgoing(n, f"k:{n}:push", f"tok-{n:04d}-abcdefghijklmnopqrstuvwxyz", {"title": "Hi", "body": "Picks"})


def test_a_500_outage_refuses_the_faulted_provider_only_and_logs_the_message_ids(channel_settings):
    fault_set(mode="500", providers=("sendgrid",))

    emails = channel_get("email").send_batch(channel_settings["email"], [_email(1), _email(2)])
    pushes = channel_get("push").send_batch(channel_settings["push"], [_push(3)])

    assert [type(r.error) for r in emails] == [TemporaryError, TemporaryError]
    assert "SendGrid 500" in str(emails[0].error)
    assert [r.error for r in pushes] == [None]
    assert list(OutboxMessage.objects.values_list("provider", "message_key")) == [("fcm", "3")]
    [refused] = refusals()
    assert (refused.provider, refused.mode, refused.keys) == ("sendgrid", "500", ("1", "2"))


def test_fcm_answers_internal_during_an_outage_and_sends_again_once_it_is_cleared(channel_settings):
    fault_set(mode="500", providers=("fcm",))
    [during] = channel_get("push").send_batch(channel_settings["push"], [_push(1)])
    assert isinstance(during.error, TemporaryError) and "INTERNAL" in str(during.error)

    fault_clear()
    [after] = channel_get("push").send_batch(channel_settings["push"], [_push(1)])

    assert after.error is None
    assert list(OutboxMessage.objects.values_list("provider", "message_key", "duplicate")) == [("fcm", "1", False)]
    assert refusals() == []  # cleared with the fault


def test_an_outage_for_some_seconds_ends_by_itself(channel_settings):
    fault_set(mode="500", providers=("sendgrid",), seconds=0.5)
    [during] = channel_get("email").send_batch(channel_settings["email"], [_email(1)])
    time.sleep(0.6)
    [after] = channel_get("email").send_batch(channel_settings["email"], [_email(1)])

    assert isinstance(during.error, TemporaryError)
    assert after.error is None
    assert OutboxMessage.objects.filter(provider="sendgrid", message_key="1").count() == 1
    assert len(refusals()) == 1


def test_a_timeout_outage_hangs_past_the_clients_timeout_and_stores_nothing(channel_settings):
    fault_set(mode="timeout", providers=("sendgrid", "fcm"))
    short = {name: {**channel_settings[name], "timeout_s": TIMEOUT_S} for name in ("email", "push")}

    started = time.monotonic()
    [email] = channel_get("email").send_batch(short["email"], [_email(1)])
    [push] = channel_get("push").send_batch(short["push"], [_push(2)])
    elapsed = time.monotonic() - started

    assert isinstance(email.error, TemporaryError) and isinstance(push.error, TemporaryError)
    assert "timed out" in str(email.error).lower() or "unreachable" in str(email.error).lower()
    assert "DEADLINE_EXCEEDED" in str(push.error) or "timed out" in str(push.error).lower()
    assert elapsed < 2 * SLOW_MS / 1000  # the clients gave up before the server answered
    time.sleep(SLOW_MS / 1000 + 0.3)  # the server's hung requests end, with a 503 and nothing stored
    assert OutboxMessage.objects.count() == 0
    assert [(r.provider, r.mode, r.keys) for r in refusals()] == [
        ("sendgrid", "timeout", ("1",)),
        ("fcm", "timeout", ("2",)),
    ]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"mode": "503"}, "mode"),
        ({"mode": "500", "providers": ("mailgun",)}, "providers"),
        ({"mode": "500", "providers": ()}, "providers"),
        ({"mode": "500", "seconds": 0}, "seconds"),
    ],
)
def test_a_bad_fault_is_refused_naming_the_argument(arguments, named):
    with pytest.raises(ValueError, match=f"^{named}:"):
        fault_set(**arguments)
    assert refusals() == []
