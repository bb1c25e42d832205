"""SMS through Twilio's Messages API with the `twilio` library.

The library's supported way to another host: every Twilio domain object has a
public `base_url` (`client.api.base_url`, "https://api.twilio.com" by default),
set here from the settings' `base_url` (the local provider server in tests and
the quickstart); the timeout is TwilioHttpClient's `timeout`. One message per
call (the Messages API takes one recipient); clients are cached per settings and
thread, so calls reuse their connections.

Errors: a 5xx, 429, timeout or connection error is temporary; Twilio's 400s are
permanent: 21211 (invalid 'To' number), 21614 ('To' is not a mobile number) and
21217 (not a phone number) are "no_address", the rest (21610 unsubscribed
recipient, 21408 region not enabled, 20003 bad credentials, …) "provider_rejected".
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import requests
from django.core.exceptions import ValidationError
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from delivery.channels.base import (
    Outgoing,
    PermanentError,
    Result,
    TemporaryError,
    masked,
    setting_text,
    setting_timeout,
    setting_url,
)

DEFAULT_BASE_URL = "https://api.twilio.com"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
NO_ADDRESS_CODES = {21211, 21217, 21614}
# TwilioHttpClient logs every request and response at INFO.
_quiet = logging.getLogger("delivery.channels.sms.twilio")
_quiet.setLevel(logging.WARNING)

_local = threading.local()


class SmsChannel:
    name = "sms"
    max_batch = 1

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        account_sid = setting_text(settings, "account_sid", errors)
        if account_sid and not ACCOUNT_SID.match(account_sid):
            errors["account_sid"] = "A Twilio account SID is AC followed by 32 hexadecimal digits."
        auth_token = setting_text(settings, "auth_token", errors)
        from_number = setting_text(settings, "from_number", errors)
        if from_number and not (E164.match(from_number) or MESSAGING_SERVICE_SID.match(from_number)):
            errors["from_number"] = "Must be an E.164 phone number (+14155550100) or a messaging service SID (MG…)."
        base_url = setting_url(settings, "base_url", errors, default=DEFAULT_BASE_URL)
        timeout_s = setting_timeout(settings, errors)
        for field in sorted(set(settings) - {"account_sid", "auth_token", "from_number", "base_url", "timeout_s"}):
            errors[field] = "Unknown setting."
        if errors:
            raise ValidationError(errors)
        return {
            "account_sid": account_sid,
            "auth_token": auth_token,
            "from_number": from_number,
            "base_url": base_url,
            "timeout_s": timeout_s,
        }

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "auth_token": masked(settings.get("auth_token", ""))}

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        return [_send_one(settings, message) for message in messages]


def _client_for(settings: dict[str, Any]) -> Client:
    """This thread's client of these settings. Per thread: TwilioHttpClient keeps
    the last request and response on itself, so threads sharing one could read
    each other's answers."""
    key = (
        settings["account_sid"],
        settings["auth_token"],
        settings.get("base_url") or DEFAULT_BASE_URL,
        float(settings.get("timeout_s") or 10.0),
    )
    clients: dict[tuple, Client] = _local.__dict__.setdefault("clients", {})
    client = clients.get(key)
    if client is None:
        # An explicit environment: no TWILIO_EDGE / TWILIO_REGION of this process
        # may rewrite the host of the configured base URL.
        client = Client(
            key[0],
            key[1],
            http_client=TwilioHttpClient(timeout=key[3], logger=_quiet),
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )
        client.api.base_url = key[2]
        clients[key] = client
    return client


def _send_one(settings: dict[str, Any], message: Outgoing) -> Result:
    if not message.to:
        return Result(message.message_id, error=PermanentError("no phone number", reason="no_address"))
    text = message.content.get("text") or ""
    if not text:
        return Result(message.message_id, error=PermanentError("the SMS has no text"))
    sender = settings["from_number"]
    origin: dict[str, str] = {"messaging_service_sid": sender} if sender.startswith("MG") else {"from_": sender}
    # The message's own status callback (delivery.receipts.twilio_status_url, set at claim).
    if message.content.get("status_callback"):
        origin["status_callback"] = message.content["status_callback"]
    try:
        sent = _client_for(settings).messages.create(to=message.to, body=text, **origin)
    except TwilioRestException as error:
        return Result(message.message_id, error=_rest_error(error))
    except requests.exceptions.RequestException as error:
        return Result(message.message_id, error=TemporaryError(f"Twilio unreachable: {error}"))
    except TwilioException as error:
        return Result(message.message_id, error=TemporaryError(f"Twilio call failed: {error}"))
    return Result(message.message_id, provider_id=sent.sid or "")


def _rest_error(error: TwilioRestException) -> TemporaryError | PermanentError:
    status, code = int(error.status or 0), error.code
    text = f"Twilio {status} (code {code}): {error.msg}"
    if status == 429 or status >= 500:
        return TemporaryError(text)
    if code in NO_ADDRESS_CODES:
        return PermanentError(text, reason="no_address")
    return PermanentError(text)


channel = SmsChannel()
