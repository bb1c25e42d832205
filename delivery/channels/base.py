"""The one shape of every delivery channel (email, push, sms, webhook).

The delivery service hands a channel a batch of already-rendered messages and
gets one Result per message back. A channel never raises for one message's
failure: it maps the provider's answer onto TemporaryError (retry with backoff:
timeouts, 5xx, 429) or PermanentError (record and stop). A failure of the whole
call (timeout, connection refused, 5xx) gives every message a TemporaryError.

Provider SDKs are imported only inside their channel module, so a process that
never sends push never imports firebase-admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class TemporaryError(Exception):
    """The send may succeed later: timeouts, connection errors, 5xx, 429.
    `retry_after` is the provider's own hint in seconds (a 429's Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class PermanentError(Exception):
    """The provider refused this message and will again: record it and stop.
    `reason` is one of the delivery skip reasons: "invalid_token",
    "provider_rejected", "no_address"."""

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
        """The cleaned settings; django ValidationError({field: msg}) on bad ones."""
        ...

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What the console may show: secrets masked."""
        ...

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        """One Result per message, in order; never raises for a per-message error."""
        ...


# --- Helpers the channels share for their settings ------------------------------------
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 60.0


def setting_text(settings: dict[str, Any], field: str, errors: dict[str, str], *, required: bool = True) -> str:
    """The setting `field` as a stripped string; an error naming it when it is
    missing (and required) or not a string."""
    value = settings.get(field)
    if value is None or value == "":
        if required:
            errors[field] = "This field is required."
        return ""
    if not isinstance(value, str):
        errors[field] = "Must be a string."
        return ""
    return value.strip()


def setting_url(settings: dict[str, Any], field: str, errors: dict[str, str], *, default: str) -> str:
    """An http(s) base URL without its trailing slash (`default` when unset)."""
    value = setting_text(settings, field, errors, required=False) or default
    if field not in errors and not value.startswith(("https://", "http://")):
        errors[field] = "Must be an http:// or https:// URL."
    return value.rstrip("/")


def setting_timeout(settings: dict[str, Any], errors: dict[str, str], field: str = "timeout_s") -> float:
    """Seconds every call of the channel may take (DEFAULT_TIMEOUT_S when unset)."""
    value = settings.get(field, DEFAULT_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
        errors[field] = f"Must be a number of seconds above 0, at most {MAX_TIMEOUT_S:g}."
        return DEFAULT_TIMEOUT_S
    return float(value)


def masked(secret: str) -> str:
    """A secret as the console shows it: its last four characters at most."""
    if not secret:
        return ""
    return "••••" + (secret[-4:] if len(secret) >= 12 else "")
