"""Webhooks: a JSON POST signed per the Standard Webhooks specification with the
`standardwebhooks` library.

Headers: `webhook-id` (the message's idempotency key: a receiver that saw it
before drops the retry), `webhook-timestamp` (Unix seconds) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`). The URL
is the message's `to` (or content's `url`); redirects are not followed.

Answers: 2xx sent; 429 (with its Retry-After), 408, 5xx, timeouts and connection
errors temporary; 410 Gone and every other 4xx or 3xx permanent.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import requests
from django.core.exceptions import ValidationError
from standardwebhooks.webhooks import Webhook

from delivery.channels.base import (
    Outgoing,
    PermanentError,
    Result,
    TemporaryError,
    masked,
    setting_text,
    setting_timeout,
)

_local = threading.local()


class WebhookChannel:
    name = "webhook"
    max_batch = 1

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        secret = setting_text(settings, "secret", errors)
        if secret:
            try:
                Webhook(secret)
            except Exception:  # noqa: BLE001 - the library raises binascii errors, ValueError or its own
                errors["secret"] = "Must be a Standard Webhooks secret: whsec_ followed by base64."
        timeout_s = setting_timeout(settings, errors)
        for field in sorted(set(settings) - {"secret", "timeout_s"}):
            errors[field] = "Unknown setting."
        if errors:
            raise ValidationError(errors)
        return {"secret": secret, "timeout_s": timeout_s}

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "secret": masked(settings.get("secret", ""))}

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        signer = Webhook(settings["secret"])
        timeout = float(settings.get("timeout_s") or 10.0)
        return [_send_one(signer, timeout, message) for message in messages]


def _session() -> requests.Session:
    # One session (connection pool) per thread: requests' Session is not thread-safe.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def _send_one(signer: Webhook, timeout: float, message: Outgoing) -> Result:
    url = message.content.get("url") or message.to
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return Result(message.message_id, error=PermanentError("no webhook URL", reason="no_address"))
    try:
        payload = json.dumps(message.content.get("body"), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        return Result(message.message_id, error=PermanentError(f"the webhook body is not JSON: {error}"))
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": message.idempotency_key,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(message.idempotency_key, now, payload),
    }
    try:
        response = _session().post(url, data=payload.encode(), headers=headers, timeout=timeout, allow_redirects=False)
    except requests.exceptions.RequestException as error:
        return Result(message.message_id, error=TemporaryError(f"webhook unreachable: {error}"))
    status = response.status_code
    if 200 <= status < 300:
        return Result(message.message_id)
    text = f"webhook answered {status}: {response.text[:300]}"
    if status in (408, 429) or status >= 500:
        return Result(message.message_id, error=TemporaryError(text, retry_after=_retry_after(response)))
    return Result(message.message_id, error=PermanentError(text))


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


channel = WebhookChannel()
