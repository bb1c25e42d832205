"""The one shape of every channel (email, push, sms, webhook): the delivery core
codes against this and nothing else of a channel. A provider SDK is imported
only inside its channel module, which channel_get imports on first use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol


class TemporaryError(Exception):  # retry with backoff: timeouts, 5xx, 429
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class PermanentError(Exception):  # record and stop
    # reason in SkipReason values: "invalid_token", "provider_rejected", "no_address"
    def __init__(self, message: str, reason: str = "provider_rejected"):
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Outgoing:
    """One message as the channel sends it."""

    message_id: int
    idempotency_key: str
    to: str  # email address / FCM token / E.164 phone / webhook URL
    # Already rendered: email {subject, html, text, from_email?, reply_to?, unsubscribe_url},
    # push {title, body, image?, deeplink?, data?}, sms {text}, webhook {body (JSON-able), url?}
    content: dict[str, Any]


@dataclass(frozen=True)
class Result:
    message_id: int
    provider_id: str = ""
    error: TemporaryError | PermanentError | None = None
    # push: the token is dead (UNREGISTERED / INVALID_ARGUMENT); the device's token must be cleared
    clear_token: bool = False


class Channel(Protocol):
    name: str  # "email" | "push" | "sms" | "webhook"
    max_batch: int  # email 1000, push 500, sms 1 (per call), webhook 1

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        """django ValidationError({field: msg}) on bad settings."""
        ...

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What the console may show: secrets masked."""
        ...

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        """One Result per message, never raises for a per-message error; a
        whole-call failure → every Result carries a TemporaryError."""
        ...


CHANNEL_NAMES = ("email", "push", "sms", "webhook")


def channel_get(name: str) -> Channel:
    """The channel named `name`: the module delivery.channels.<name>'s `channel`."""
    if name not in CHANNEL_NAMES:
        raise LookupError(f"unknown channel {name!r}; expected one of {', '.join(CHANNEL_NAMES)}")
    module = importlib.import_module(f"delivery.channels.{name}")
    return module.channel
