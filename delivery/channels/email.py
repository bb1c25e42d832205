"""Email through SendGrid's v3 `mail/send`, with the `sendgrid` library.

Batching: one call carries up to 1,000 personalizations (SendGrid's limit), one
per recipient, each with its own subject, `custom_args` (the message id and
idempotency key, echoed in SendGrid's event webhooks) and RFC 8058 headers
(`List-Unsubscribe: <url>`, `List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
A v3 request has one `content` for all its personalizations, so per-recipient
bodies travel as substitutions: the content is the two tags `-engage-text-` and
`-engage-html-`, and each personalization substitutes its own rendered text and
HTML. SendGrid caps a personalization's substitutions at 10,000 bytes; a message
whose bodies are larger is sent with its own content, batched only with messages
whose bodies are identical (same sender, same HTML and text).

Errors: an address SendGrid would refuse (Django's email validation, as the
local server applies it) fails at once as no_address, before the call; 429 and
5xx, timeouts and connection errors are temporary for the whole call; a 400
whose errors name personalizations (`personalizations.3.to.0.email`) fails
those messages permanently and the rest are sent again without them (3 calls at
most); any other 4xx (a bad API key: 401) fails every message of the call
permanently.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
from collections import defaultdict
from typing import Any

import sendgrid
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from python_http_client import exceptions as http_errors

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

DEFAULT_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
# SendGrid: "the total collective size of your substitutions may not exceed 10,000 bytes per personalization".
SUBSTITUTIONS_MAX_BYTES = 10_000
TEXT_TAG = "-engage-text-"
HTML_TAG = "-engage-html-"
# Calls of one chunk at most: each one after a 400 naming personalizations leaves those out.
RESEND_ROUNDS = 3
# The SendGrid Event Webhook's verification key (delivery.receipts).
EVENT_WEBHOOK_KEY = "event_webhook_public_key"
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\.(.*)$")


class EmailChannel:
    name = "email"
    max_batch = MAX_PERSONALIZATIONS

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        api_key = setting_text(settings, "api_key", errors)
        if api_key and not api_key.startswith("SG."):
            errors["api_key"] = "A SendGrid API key starts with 'SG.'."
        from_email = setting_text(settings, "from_email", errors)
        if from_email:
            try:
                validate_email(from_email)
            except ValidationError:
                errors["from_email"] = "Enter a valid email address."
        host = setting_url(settings, "host", errors, default=DEFAULT_HOST)
        timeout_s = setting_timeout(settings, errors)
        # Optional: the Event Webhook's verification key (public, so shown back),
        # without which the project's receipts endpoint refuses every request.
        public_key = setting_text(settings, EVENT_WEBHOOK_KEY, errors, required=False)
        if public_key:
            from delivery.receipts import public_key_problem

            problem = public_key_problem(public_key)
            if problem:
                errors[EVENT_WEBHOOK_KEY] = problem
        unknown = sorted(set(settings) - {"api_key", "from_email", "host", "timeout_s", EVENT_WEBHOOK_KEY})
        for field in unknown:
            errors[field] = "Unknown setting."
        if errors:
            raise ValidationError(errors)
        out = {"api_key": api_key, "from_email": from_email, "host": host, "timeout_s": timeout_s}
        if public_key:
            out[EVENT_WEBHOOK_KEY] = public_key
        return out

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, "api_key": masked(settings.get("api_key", ""))}

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        client = sendgrid.SendGridAPIClient(api_key=settings["api_key"], host=settings.get("host") or DEFAULT_HOST)
        timeout = float(settings.get("timeout_s") or 10.0)
        results: dict[int, Result] = {}
        groups: dict[tuple, list[Outgoing]] = defaultdict(list)
        for message in messages:
            problem = _content_problem(message)
            if problem:
                results[message.message_id] = Result(message.message_id, error=problem)
                continue
            groups[_group_key(message, settings["from_email"])].append(message)
        for key, group in groups.items():
            for start in range(0, len(group), MAX_PERSONALIZATIONS):
                chunk = group[start : start + MAX_PERSONALIZATIONS]
                for result in _send_call(client, timeout, key, chunk, rounds=RESEND_ROUNDS):
                    results[result.message_id] = result
        return [results[message.message_id] for message in messages]


def _content_problem(message: Outgoing) -> PermanentError | None:
    if not message.to:
        return PermanentError("no email address", reason="no_address")
    if not _valid_address(message.to):
        # SendGrid refuses it with a 400 for the whole call ("Does not contain a
        # valid address"), which costs a second call for the others: refused here.
        return PermanentError("SendGrid refuses this address: not a valid email address", reason="no_address")
    content = message.content
    if not content.get("subject"):
        return PermanentError("the email has no subject")
    if not content.get("html") and not content.get("text"):
        return PermanentError("the email has neither HTML nor text")
    return None


def _valid_address(address: str) -> bool:
    """Django's email validation, as the local server applies it: an address
    with a non-ASCII local part (müller@…) is refused, as SendGrid does."""
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def _group_key(message: Outgoing, default_from: str) -> tuple:
    """Messages one call can carry together: same sender and reply-to; and, for
    bodies too large for substitutions, the same bodies."""
    content = message.content
    html, text = content.get("html") or "", content.get("text") or ""
    sender = (content.get("from_email") or default_from, content.get("reply_to") or "")
    size = len(html.encode()) + len(text.encode()) + len(HTML_TAG) + len(TEXT_TAG)
    if size <= SUBSTITUTIONS_MAX_BYTES:
        return ("substituted", *sender, bool(text), bool(html))
    return ("own", *sender, text, html)


def _request_body(key: tuple, chunk: list[Outgoing]) -> dict[str, Any]:
    mode, from_email, reply_to = key[0], key[1], key[2]
    if mode == "substituted":
        has_text, has_html = key[3], key[4]
        text, html = (TEXT_TAG if has_text else ""), (HTML_TAG if has_html else "")
    else:
        text, html = key[3], key[4]
    body: dict[str, Any] = {
        "from": {"email": from_email},
        # text/plain first: SendGrid requires that order.
        "content": [
            *([{"type": "text/plain", "value": text}] if text else []),
            *([{"type": "text/html", "value": html}] if html else []),
        ],
        "personalizations": [_personalization(message, substituted=mode == "substituted") for message in chunk],
    }
    if reply_to:
        body["reply_to"] = {"email": reply_to}
    return body


def _personalization(message: Outgoing, *, substituted: bool) -> dict[str, Any]:
    content = message.content
    personalization: dict[str, Any] = {
        "to": [{"email": message.to}],
        "subject": content["subject"],
        "custom_args": {"message_id": str(message.message_id), "idempotency_key": message.idempotency_key},
    }
    unsubscribe_url = content.get("unsubscribe_url")
    if unsubscribe_url:
        # RFC 8058 one-click unsubscribe: mailbox providers POST to the URL.
        personalization["headers"] = {
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    if substituted:
        substitutions = {}
        if content.get("text"):
            substitutions[TEXT_TAG] = content["text"]
        if content.get("html"):
            substitutions[HTML_TAG] = content["html"]
        personalization["substitutions"] = substitutions
    return personalization


def _send_call(client: Any, timeout: float, key: tuple, chunk: list[Outgoing], *, rounds: int) -> list[Result]:
    try:
        response = client.client.mail.send.post(request_body=_request_body(key, chunk), timeout=timeout)
    except http_errors.HTTPError as error:
        return _error_results(client, timeout, key, chunk, error, rounds=rounds)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        # Timeouts (TimeoutError is an OSError) and refused connections.
        failure = TemporaryError(f"SendGrid unreachable: {error}")
        return [Result(message.message_id, error=failure) for message in chunk]
    provider_id = response.headers.get("X-Message-Id", "") if response.headers else ""
    return [Result(message.message_id, provider_id=provider_id) for message in chunk]


def _error_results(
    client: Any, timeout: float, key: tuple, chunk: list[Outgoing], error: Any, *, rounds: int
) -> list[Result]:
    status = int(error.status_code)
    detail = _error_messages(error.body)
    if status == 429 or status >= 500:
        retry_after = _retry_after(error.headers)
        failure = TemporaryError(f"SendGrid {status}: {detail}", retry_after=retry_after)
        return [Result(message.message_id, error=failure) for message in chunk]
    rejected: dict[int, PermanentError] = {}
    if status == 400:
        for item in _error_items(error.body):
            match = _PERSONALIZATION_FIELD.match(str(item.get("field") or ""))
            if match is None or int(match.group(1)) >= len(chunk):
                rejected.clear()
                break
            index, field = int(match.group(1)), match.group(2)
            reason = "no_address" if field.startswith("to.") else "provider_rejected"
            rejected[index] = PermanentError(f"SendGrid 400: {item.get('message') or detail}", reason=reason)
    if not rejected:
        failure = PermanentError(f"SendGrid {status}: {detail}")
        return [Result(message.message_id, error=failure) for message in chunk]
    results = [Result(chunk[index].message_id, error=problem) for index, problem in rejected.items()]
    rest = [message for index, message in enumerate(chunk) if index not in rejected]
    if rest and rounds > 1:
        results.extend(_send_call(client, timeout, key, rest, rounds=rounds - 1))
    elif rest:
        failure = PermanentError(f"SendGrid {status}: {detail}")
        results.extend(Result(message.message_id, error=failure) for message in rest)
    return results


def _error_items(body: bytes | str | None) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(body or b"")
    except (ValueError, TypeError):
        return []
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return [item for item in errors if isinstance(item, dict)] if isinstance(errors, list) else []


def _error_messages(body: bytes | str | None) -> str:
    items = _error_items(body)
    if items:
        return "; ".join(str(item.get("message")) for item in items)[:500]
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    return text[:500]


def _retry_after(headers: Any) -> float | None:
    """Seconds until SendGrid takes requests again: its 429 names the moment the
    rate limit resets (X-RateLimit-Reset, Unix seconds); Retry-After if present."""
    if headers is None:
        return None
    try:
        if headers.get("Retry-After") is not None:
            return float(headers["Retry-After"])
        if headers.get("X-RateLimit-Reset") is not None:
            return max(0.0, float(headers["X-RateLimit-Reset"]) - time.time())
    except ValueError:
        return None
    return None


channel = EmailChannel()
