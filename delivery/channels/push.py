"""Push through Firebase Cloud Messaging (HTTP v1) with `firebase-admin`'s
`messaging.send_each` (at most 500 messages per call: the SDK's limit).

One firebase App per distinct settings (service account, FCM URL, timeout),
created once per process and cached by the settings' hash: an App holds the
credential's access token and the HTTP connection pool.

firebase-admin 7.7 has no public option for the FCM endpoint: the messaging
service keeps it in `_MessagingService._fcm_url`, set here from the settings'
`fcm_url` (the local provider server in tests and the quickstart). The OAuth
token endpoint is the service account's own `token_uri`, a public field. The
same private service gets one more adapter, for the FCM URL: the SDK's default
retries a 500 or 503 four times with backoff inside the call (up to 7.5 s per
message); the delivery service retries temporary errors itself, with its own
backoff and limit, so here a 5xx comes back at once as a TemporaryError.

Errors per message: UNREGISTERED, SENDER_ID_MISMATCH and an INVALID_ARGUMENT on
the registration token are PermanentError("invalid_token") with clear_token=True;
UNAVAILABLE, INTERNAL, quota (RESOURCE_EXHAUSTED, with its Retry-After), deadline
and connection errors are temporary; anything else is a permanent rejection.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import requests.adapters
import requests.utils
from django.core.exceptions import ValidationError
from firebase_admin import credentials, exceptions, messaging
from urllib3.util import Retry

from delivery.channels.base import (
    Outgoing,
    PermanentError,
    Result,
    TemporaryError,
    setting_timeout,
    setting_url,
)

DEFAULT_FCM_URL = "https://fcm.googleapis.com"
MAX_BATCH = 500
# Keys of the data payload the channel adds to every message.
DATA_MESSAGE_ID = "engage_message_id"
DATA_DEEPLINK = "deeplink"
_SERVICE_ACCOUNT_FIELDS = ("project_id", "private_key", "client_email", "token_uri")
_TEMPORARY_CODES = {"UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNKNOWN", "ABORTED"}

_apps: dict[str, Any] = {}
_apps_lock = threading.Lock()
_refresh_locks: dict[str, threading.Lock] = {}


class PushChannel:
    name = "push"
    max_batch = MAX_BATCH

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        account = _service_account(settings.get("service_account"), errors)
        fcm_url = setting_url(settings, "fcm_url", errors, default=DEFAULT_FCM_URL)
        timeout_s = setting_timeout(settings, errors)
        for field in sorted(set(settings) - {"service_account", "fcm_url", "timeout_s"}):
            errors[field] = "Unknown setting."
        if errors:
            raise ValidationError(errors)
        return {"service_account": account, "fcm_url": fcm_url, "timeout_s": timeout_s}

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        account = settings.get("service_account") or {}
        shown = {key: account.get(key, "") for key in ("project_id", "client_email", "token_uri")}
        shown["private_key"] = "••••" if account.get("private_key") else ""
        return {**settings, "service_account": shown}

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        results: dict[int, Result] = {}
        to_send: list[tuple[Outgoing, Any]] = []
        for message in messages:
            built = _message_build(message)
            if isinstance(built, PermanentError):
                results[message.message_id] = Result(message.message_id, error=built)
            else:
                to_send.append((message, built))
        if to_send:
            app, key = _app_for(settings)
            failure = _token_ensure(app, key, float(settings.get("timeout_s") or 10.0))
            for start in range(0, len(to_send), MAX_BATCH):
                chunk = to_send[start : start + MAX_BATCH]
                if failure is not None:
                    responses: list[Any] = [failure] * len(chunk)
                else:
                    responses = _send_each(messaging, app, [built for _, built in chunk])
                for (message, _), response in zip(chunk, responses, strict=True):
                    results[message.message_id] = _result(message.message_id, response)
        return [results[message.message_id] for message in messages]


def _service_account(value: Any, errors: dict[str, str]) -> dict[str, Any]:
    field = "service_account"
    if value is None or value == "":
        errors[field] = "This field is required."
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            errors[field] = "Must be the service account's JSON key file."
            return {}
    if not isinstance(value, dict) or value.get("type") != "service_account":
        errors[field] = 'Must be a service account key: a JSON object with "type": "service_account".'
        return {}
    missing = [name for name in _SERVICE_ACCOUNT_FIELDS if not isinstance(value.get(name), str) or not value[name]]
    if missing:
        errors[field] = "Missing " + ", ".join(missing) + "."
        return {}
    if not value["token_uri"].startswith(("https://", "http://")):
        errors[field] = "token_uri must be an http:// or https:// URL."
        return {}
    try:
        credentials.Certificate(value)
    except ValueError as error:
        errors[field] = f"Not a usable service account key: {error}"
        return {}
    return value


def _settings_key(settings: dict[str, Any]) -> str:
    canonical = json.dumps(
        [settings["service_account"], settings.get("fcm_url") or DEFAULT_FCM_URL, settings.get("timeout_s")],
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _app_for(settings: dict[str, Any]) -> tuple[Any, str]:
    """The cached firebase App of these settings (created on first use)."""
    key = _settings_key(settings)
    app = _apps.get(key)
    if app is not None:
        return app, key
    with _apps_lock:
        if key not in _apps:
            _apps[key] = _app_create(settings, key)
            _refresh_locks[key] = threading.Lock()
        return _apps[key], key


def _app_create(settings: dict[str, Any], key: str) -> Any:
    timeout = float(settings.get("timeout_s") or 10.0)
    account = settings["service_account"]
    app = firebase_admin.initialize_app(
        credentials.Certificate(account), options={"httpTimeout": timeout}, name=f"engage-push-{key}"
    )
    service = messaging._get_messaging_service(app)  # noqa: SLF001 - see the module docstring
    fcm_url = (settings.get("fcm_url") or DEFAULT_FCM_URL).rstrip("/")
    service._fcm_url = f"{fcm_url}/v1/projects/{account['project_id']}/messages:send"  # noqa: SLF001
    # One pooled connection per concurrent send (send_each runs a thread per message);
    # one retry of a refused connection, none of a 5xx (the delivery service retries);
    # a read timeout raised as such (read=False), so it maps to DEADLINE_EXCEEDED.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=1,
        pool_maxsize=MAX_BATCH,
        max_retries=Retry(connect=1, read=False, status=0, raise_on_status=False, allowed_methods=None),
    )
    session = service._client.session  # noqa: SLF001
    session.mount(fcm_url + "/", adapter)
    # requests reads the proxy and CA-bundle environment variables again on every
    # request (trust_env): with the ~90 variables of a container that was most of
    # the client's CPU per push (184 environment reads a call; bench/campaigns.py,
    # docs/benchmarks.md). They are read once here instead, for this URL.
    session.proxies.update(requests.utils.get_environ_proxies(fcm_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return app


def _token_ensure(app: Any, key: str, timeout: float) -> Any:
    """Fetch the access token once before a batch, so that send_each's 500 threads
    do not all refresh it; None when it is valid, else the error for every message."""
    credential = app.credential.get_credential()
    if credential.valid:
        return None
    with _refresh_locks[key]:
        if credential.valid:
            return None
        try:
            credential.refresh(_TimedRequest(timeout))
        except google.auth.exceptions.RefreshError as error:
            if getattr(error, "retryable", False):
                return TemporaryError(f"FCM token refresh failed: {error}")
            return PermanentError(f"FCM token refused: {error}")
        except google.auth.exceptions.TransportError as error:
            return TemporaryError(f"FCM token endpoint unreachable: {error}")
    return None


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's request with the channel's timeout instead of its 120 s default."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        return super().__call__(url, method, body, headers, timeout or self._timeout, **kwargs)


def _message_build(message: Outgoing) -> Any:
    """The firebase Message of `message`, or the PermanentError that stops it
    (validated here, one message at a time: send_each refuses the whole batch
    for one message it cannot encode)."""
    if not message.to:
        return PermanentError("no push token", reason="no_address")
    content = message.content
    if not content.get("title") and not content.get("body"):
        return PermanentError("the push has neither title nor body")
    data = {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in (content.get("data") or {}).items()
    }
    if content.get("deeplink"):
        data[DATA_DEEPLINK] = str(content["deeplink"])
    data[DATA_MESSAGE_ID] = str(message.message_id)
    built = messaging.Message(
        notification=messaging.Notification(
            title=content.get("title") or None, body=content.get("body") or None, image=content.get("image") or None
        ),
        data=data,
    )
    # Devices hold FCM registration tokens (the apps' getToken()), which FCM v1 takes
    # as `message.token`. firebase-admin 7.7 warns on every Message(token=…) that
    # Firebase installation ids (`fid`) replace them; they are not the same value,
    # so the token is set as the attribute the encoder reads, without the warning.
    built.token = message.to
    try:
        messaging._MessagingService.encode_message(built)  # noqa: SLF001 - the SDK's own checks
    except ValueError as error:
        return PermanentError(f"FCM message refused: {error}")
    return built


def _send_each(messaging: Any, app: Any, built: list[Any]) -> list[Any]:
    try:
        batch = messaging.send_each(built, app=app)
    except exceptions.FirebaseError as error:
        return [TemporaryError(f"FCM call failed: {error}")] * len(built)
    return list(batch.responses)


def _result(message_id: int, response: Any) -> Result:
    if isinstance(response, TemporaryError | PermanentError):
        return Result(message_id, error=response)
    if response.success:
        return Result(message_id, provider_id=response.message_id or "")
    return Result(message_id, **_error_fields(response.exception))


def _error_fields(error: Any) -> dict[str, Any]:
    code = getattr(error, "code", "UNKNOWN")
    text = f"FCM {code}: {error}"
    if isinstance(error, messaging.UnregisteredError | messaging.SenderIdMismatchError) or (
        code == "INVALID_ARGUMENT" and "registration token" in str(error).lower()
    ):
        return {"error": PermanentError(text, reason="invalid_token"), "clear_token": True}
    if isinstance(error, messaging.QuotaExceededError) or code in _TEMPORARY_CODES:
        return {"error": TemporaryError(text, retry_after=_retry_after(error))}
    return {"error": PermanentError(text)}


def _retry_after(error: Any) -> float | None:
    response = getattr(error, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


channel = PushChannel()
