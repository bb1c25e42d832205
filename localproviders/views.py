"""The local provider server: SendGrid, Google OAuth + FCM, Twilio and a webhook
receiver, close enough to the real protocols that the real client libraries
(sendgrid, firebase-admin, twilio) run against it unchanged. On only with the
LOCAL_PROVIDERS setting (default: on with DEBUG); otherwise every path is 404.

    POST /_local/sendgrid/v3/mail/send                       SendGrid v3 mail/send
    POST /_local/google/token                                Google's OAuth token endpoint (JWT bearer grant)
    POST /_local/fcm/v1/projects/<project>/messages:send     FCM HTTP v1
    POST /_local/twilio/2010-04-01/Accounts/<sid>/Messages.json   Twilio Messages
    POST /_local/webhooks/<name>                             a Standard Webhooks receiver

What each checks, as the real one does: SendGrid an API key (`Bearer SG.…`, 401
otherwise), personalizations (1 to 1,000), valid `to` addresses, `from`,
content and a subject (400 with `{"errors": [{"field", "message", "help"}]}`);
FCM a bearer token this server issued (401 UNAUTHENTICATED), the token's format
(400 INVALID_ARGUMENT) and string data values, errors in the googleapis format
with `details[].errorCode`; Twilio HTTP Basic credentials matching the account
in the URL (401, code 20003), To (21604 / 21211), From (21603 / 21212) and Body
(21602, at most 1,600 characters: 21617); the webhook receiver verifies the
signature with the `standardwebhooks` library against LOCAL_PROVIDERS_WEBHOOK_SECRET
(401 when it does not verify; the request is still recorded, signature_valid
false) and flags a webhook-id it saw before (`duplicate`).

Test hooks: a recipient (email address, FCM token, phone number, webhook name)
starting with one of these prefixes makes the server answer as a failing provider:

    fail-500-       500 (SendGrid: the whole call; FCM: INTERNAL for that message)
    slow-           sleeps LOCAL_PROVIDERS_SLOW_MS before answering (and then
                    accepts and records it: a client that timed out may still have
                    delivered, which is what idempotency keys are for)
    rate-limit-     429 (SendGrid: X-RateLimit-Reset; FCM: RESOURCE_EXHAUSTED /
                    QUOTA_EXCEEDED with Retry-After; Twilio: code 20429; webhook: Retry-After)
    reject-         SendGrid: 400 naming that personalization's address; Twilio: 400
                    code 21610 (unsubscribed recipient); webhook: 400
    unregistered-   FCM: 404 NOT_FOUND / UNREGISTERED
    invalid-        FCM: 400 INVALID_ARGUMENT (not a valid registration token)
    unavailable-    FCM: 503 UNAVAILABLE
    gone-           webhook: 410 Gone

A failed request records nothing. Outages of every request for a while (500s,
timeouts) are switched on in process by localproviders.faults.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from email.utils import format_datetime
from functools import wraps
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from localproviders.faults import fault_for
from localproviders.models import OutboxMessage
from localproviders.outbox import OutboxUnavailable, outbox_record, storable
from localproviders.receipts import sendgrid_receipts_queue, twilio_receipt_queue

SENDGRID_MAX_BYTES = 30 * 1024 * 1024  # SendGrid: 30 MB per request
OTHER_MAX_BYTES = 1024 * 1024
SENDGRID_MAX_PERSONALIZATIONS = 1000
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TWILIO_BODY_MAX = 1600
_TOKEN_SALT = "localproviders.google.token"
_TOKEN_SECONDS = 3600
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def local_provider(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """POST only, no CSRF (API clients), and 404 unless LOCAL_PROVIDERS is on
    (read per request, so a test can switch it)."""

    allowed = require_POST(view)

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.LOCAL_PROVIDERS:
            raise Http404("local providers are off (LOCAL_PROVIDERS)")
        return allowed(request, *args, **kwargs)

    return csrf_exempt(wrapped)


def _body(request: HttpRequest, limit: int) -> bytes | None:
    """The raw body, or None past `limit`. Read from the stream: Django's
    request.body stops at DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), and a SendGrid call
    of 1,000 personalized emails is larger."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    data = request.read(limit + 1)
    return None if len(data) > limit else data


def _magic(recipient: str) -> str:
    for prefix in (
        "fail-500-",
        "slow-",
        "rate-limit-",
        "reject-",
        "unregistered-",
        "invalid-",
        "unavailable-",
        "gone-",
    ):
        if recipient.startswith(prefix):
            return prefix
    return ""


def _slow_sleep() -> None:
    time.sleep(settings.LOCAL_PROVIDERS_SLOW_MS / 1000)


def _faulted(provider: str, keys: list[str], error: Callable[[int], HttpResponse]) -> HttpResponse | None:
    """The answer of a provider outage switched on (localproviders.faults), None
    when there is none: `error(status)` is the provider's error of that status."""
    mode = fault_for(provider, keys)
    if not mode:
        return None
    if mode == "timeout":
        _slow_sleep()
        return error(503)
    return error(500)


def _stored(rows: list[OutboxMessage], answer: Callable[[], HttpResponse]) -> HttpResponse:
    try:
        outbox_record(rows=rows)
    except OutboxUnavailable:
        return JsonResponse({"errors": [{"field": None, "message": "outbox unavailable", "help": None}]}, status=503)
    return answer()


# --- SendGrid ---------------------------------------------------------------------


def _sendgrid_error(status: int, errors: list[tuple[str | None, str]], **headers: str) -> JsonResponse:
    response = JsonResponse(
        {"errors": [{"field": field, "message": message, "help": None} for field, message in errors]}, status=status
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


@local_provider
def sendgrid_mail_send(request: HttpRequest) -> HttpResponse:
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("Bearer SG.") or len(auth) <= len("Bearer SG."):
        return _sendgrid_error(401, [(None, "The provided authorization grant is invalid, expired, or revoked")])
    raw = _body(request, SENDGRID_MAX_BYTES)
    if raw is None:
        return _sendgrid_error(413, [(None, "The request is too large: at most 30 MB.")])
    try:
        mail = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _sendgrid_error(400, [(None, "Bad Request")])
    if not isinstance(mail, dict):
        return _sendgrid_error(400, [(None, "Bad Request")])
    faulted = _faulted(
        "sendgrid", _sendgrid_keys(mail), lambda status: _sendgrid_error(status, [(None, "local fault")])
    )
    if faulted is not None:
        return faulted
    errors = _sendgrid_problems(mail)
    if errors:
        return _sendgrid_error(400, errors)
    personalizations = mail["personalizations"]
    recipients = [(index, to["email"]) for index, p in enumerate(personalizations) for to in p["to"]]
    hooks = {_magic(email) for _, email in recipients}
    if "fail-500-" in hooks:
        return _sendgrid_error(500, [(None, "Internal server error (local test hook fail-500-)")])
    if "rate-limit-" in hooks:
        return _sendgrid_error(
            429, [(None, "too many requests")], X_RateLimit_Limit="600", X_RateLimit_Remaining="0",
            X_RateLimit_Reset=str(int(time.time()) + 1),
        )  # fmt: skip
    rejected = [
        (f"personalizations.{index}.to.{position}.email", "The email address is rejected (local test hook reject-).")
        for index, p in enumerate(personalizations)
        for position, to in enumerate(p["to"])
        if to["email"].startswith("reject-")
    ]
    if rejected:
        return _sendgrid_error(400, rejected)
    if "slow-" in hooks:
        _slow_sleep()
    rows = _sendgrid_rows(mail, _storable_of(raw))

    def accepted() -> HttpResponse:
        response = HttpResponse(status=202)
        response["X-Message-Id"] = secrets.token_urlsafe(16)
        # Its receipts, posted after this response (localproviders.receipts).
        sendgrid_receipts_queue(
            recipients=[
                (to["email"], {k: str(v) for k, v in {**(mail.get("custom_args") or {}),
                                                      **(p.get("custom_args") or {})}.items()})
                for p in personalizations
                for to in p["to"]
            ],
            sg_message_id=response["X-Message-Id"],
        )  # fmt: skip
        return response

    return _stored(rows, accepted)


def _sendgrid_keys(mail: dict[str, Any]) -> list[str]:
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list):
        return []
    args = [p.get("custom_args") for p in personalizations if isinstance(p, dict)]
    return [str(a.get("message_id", "")) for a in args if isinstance(a, dict)]


# SendGrid's own error messages.
_SG_FROM = (
    "The from object must be provided for every email send. It is an object that requires the email "
    "parameter, but may also contain a name parameter."
)
_SG_PERSONALIZATIONS = "The personalizations field is required and must have at least one personalization."
_SG_CONTENT = "Unless a valid template_id is provided, the content parameter is required."
_SG_CONTENT_VALUE = "The content value must be a string at least one character in length."
_SG_CONTENT_TYPE = "The content type cannot contain ';', or CRLF characters."
_SG_CONTENT_ORDER = "If present, text/plain must be first, followed by text/html, followed by any other content."
_SG_TO = (
    "The to array is required for all personalization objects, and must have at least one email object "
    "with a valid email address."
)
_SG_ADDRESS = "Does not contain a valid address."
_SG_SUBJECT = (
    "The subject is required. You can get around this requirement if you use a template with a subject "
    "defined or if every personalization has a subject defined."
)
_SG_SUBSTITUTIONS = (
    "The total collective size of your substitutions may not exceed 10,000 bytes per personalization object."
)
SENDGRID_SUBSTITUTIONS_MAX_BYTES = 10_000


def _sendgrid_problems(mail: dict[str, Any]) -> list[tuple[str | None, str]]:
    """Every problem of the request SendGrid would refuse it for, naming the field."""
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return [("personalizations", _SG_PERSONALIZATIONS)]
    if len(personalizations) > SENDGRID_MAX_PERSONALIZATIONS:
        return [("personalizations", "The personalizations field must have no more than 1000 items.")]
    errors: list[tuple[str | None, str]] = []
    sender = mail.get("from")
    if not isinstance(sender, dict) or not _valid_email(sender.get("email")):
        errors.append(("from.email", _SG_FROM))
    if not mail.get("template_id"):
        errors.extend(_sendgrid_content_problems(mail.get("content")))
    top_subject = isinstance(mail.get("subject"), str) and mail["subject"]
    for index, p in enumerate(personalizations):
        where = f"personalizations.{index}"
        if not isinstance(p, dict):
            errors.append((where, "Each personalization must be an object."))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append((f"{where}.to", _SG_TO))
            continue
        for position, address in enumerate(to):
            if not isinstance(address, dict) or not _valid_email(address.get("email")):
                errors.append((f"{where}.to.{position}.email", _SG_ADDRESS))
        if not top_subject and not (isinstance(p.get("subject"), str) and p["subject"]):
            errors.append((f"{where}.subject", _SG_SUBJECT))
        for field in ("headers", "substitutions", "custom_args"):
            value = p.get(field)
            if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
                errors.append((f"{where}.{field}", f"The {field} must be an object of strings."))
        substitutions = p.get("substitutions")
        if isinstance(substitutions, dict):
            size = sum(len(str(key).encode()) + len(str(value).encode()) for key, value in substitutions.items())
            if size > SENDGRID_SUBSTITUTIONS_MAX_BYTES:
                errors.append((f"{where}.substitutions", _SG_SUBSTITUTIONS))
    return errors


def _sendgrid_content_problems(content: Any) -> list[tuple[str | None, str]]:
    if not isinstance(content, list) or not content:
        return [("content", _SG_CONTENT)]
    errors: list[tuple[str | None, str]] = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("value"), str) or not part["value"]:
            errors.append((f"content.{index}.value", _SG_CONTENT_VALUE))
        elif not isinstance(part.get("type"), str) or not part["type"]:
            errors.append((f"content.{index}.type", _SG_CONTENT_TYPE))
    types = [part.get("type") for part in content if isinstance(part, dict)]
    if "text/plain" in types and types[0] != "text/plain":
        errors.append(("content", _SG_CONTENT_ORDER))
    return errors


def _valid_email(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def _substituted(text: str, substitutions: dict[str, str]) -> str:
    for tag, value in substitutions.items():
        text = text.replace(tag, value)
    return text


# What jsonb and text columns refuse can reach parsed JSON only through these
# escapes (a raw NUL or surrogate is not valid JSON text or UTF-8): a body
# without them needs no storable() pass, which was a third of the server's time
# per SendGrid personalization (bench/campaigns.py).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _storable_of(raw: bytes) -> Callable[[Any], Any]:
    return storable if _UNSTORABLE_ESCAPE.search(raw) else _as_is


def _as_is(value: Any) -> Any:
    return value


def _sendgrid_rows(mail: dict[str, Any], storable: Callable[[Any], Any] = storable) -> list[OutboxMessage]:
    call_id = uuid.uuid4()
    now = timezone.now()
    content = {part["type"]: part["value"] for part in mail.get("content") or []}
    common = {key: value for key, value in mail.items() if key != "personalizations"}
    rows = []
    for p in mail["personalizations"]:
        substitutions = p.get("substitutions") or {}
        headers = {**(mail.get("headers") or {}), **(p.get("headers") or {})}
        custom_args = {**(mail.get("custom_args") or {}), **(p.get("custom_args") or {})}
        subject = _substituted(p.get("subject") or mail.get("subject") or "", substitutions)
        for to in p["to"]:
            rows.append(
                OutboxMessage(
                    provider=OutboxMessage.Provider.SENDGRID,
                    call_id=call_id,
                    recipient=storable(to["email"]),
                    subject=storable(subject),
                    body=storable(_substituted(content.get("text/plain", ""), substitutions)),
                    html=storable(_substituted(content.get("text/html", ""), substitutions)),
                    message_key=storable(custom_args.get("message_id", ""))[:255],
                    headers=storable({**headers, "from": (mail.get("from") or {}).get("email", "")}),
                    request=storable({**common, "personalization": p}),
                    received_at=now,
                )
            )
    return rows


# --- Google OAuth and FCM ------------------------------------------------------------


def _jwt_claims(assertion: str) -> dict[str, Any] | None:
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


@local_provider
def google_token(request: HttpRequest) -> HttpResponse:
    """The JWT bearer grant of a service account (RFC 7523), as google-auth sends
    it. The assertion's claims are checked (issuer, audience: Google's endpoint or this one,
    scope, expiry); its RS256 signature is not, as this server has no public key."""
    form = parse_qs((_body(request, OTHER_MAX_BYTES) or b"").decode(errors="replace"))
    grant = (form.get("grant_type") or [""])[0]
    if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return JsonResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}, status=400)
    claims = _jwt_claims((form.get("assertion") or [""])[0])
    if claims is None or not claims.get("iss") or not claims.get("scope"):
        return JsonResponse({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400)
    # google-auth always names Google's own endpoint as the audience, whatever the token_uri.
    audience = str(claims.get("aud", ""))
    if audience != "https://oauth2.googleapis.com/token" and not audience.endswith(request.path):
        return JsonResponse({"error": "invalid_grant", "error_description": "Invalid JWT: aud"}, status=400)
    if float(claims.get("exp") or 0) < time.time():
        return JsonResponse(
            {
                "error": "invalid_grant",
                "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe.",
            },
            status=400,
        )  # noqa: E501
    token = signing.dumps({"iss": claims["iss"]}, salt=_TOKEN_SALT)
    return JsonResponse({"access_token": token, "expires_in": _TOKEN_SECONDS - 1, "token_type": "Bearer"})


def _google_error(status: int, state: str, message: str, fcm_code: str | None = None, **headers: str) -> JsonResponse:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if fcm_code:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": fcm_code}]
    response = JsonResponse({"error": error}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _invalid_token(token: str) -> JsonResponse:
    response = _google_error(
        400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"
    )
    body = json.loads(response.content)
    body["error"]["details"].append(
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
    )  # fmt: skip
    return JsonResponse(body, status=400)


@local_provider
def fcm_send(request: HttpRequest, project_id: str) -> HttpResponse:
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    try:
        signing.loads(auth.removeprefix("Bearer "), salt=_TOKEN_SALT, max_age=_TOKEN_SECONDS)
    except signing.BadSignature:
        return _google_error(
            401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
        )  # fmt: skip
    raw = _body(request, OTHER_MAX_BYTES)
    if raw is None:
        return _google_error(400, "INVALID_ARGUMENT", "Request payload size exceeds the limit.")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        return _google_error(
            400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name: message", "INVALID_ARGUMENT"
        )
    data_keys = message.get("data") if isinstance(message.get("data"), dict) else {}
    faulted = _faulted(
        "fcm",
        [str(data_keys.get("engage_message_id", ""))],
        lambda status: _google_error(status, "INTERNAL" if status == 500 else "UNAVAILABLE", "local fault"),
    )
    if faulted is not None:
        return faulted
    token = message.get("token")
    if not isinstance(token, str) or not token:
        return _google_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT")
    hook = _magic(token)
    if hook == "fail-500-":
        return _google_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")
    if hook == "unavailable-":
        return _google_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
    if hook == "rate-limit-":
        return _google_error(
            429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'.", "QUOTA_EXCEEDED",
            Retry_After="2",
        )  # fmt: skip
    if hook == "unregistered-":
        return _google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    if hook == "invalid-" or not FCM_TOKEN.match(token):
        return _invalid_token(token)
    data = message.get("data") or {}
    if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
        return _google_error(
            400, "INVALID_ARGUMENT", "Invalid value at 'message.data': values must be strings.", "INVALID_ARGUMENT"
        )  # noqa: E501
    if hook == "slow-":
        _slow_sleep()
    name = f"projects/{project_id}/messages/{secrets.token_hex(8)}"
    if payload.get("validate_only"):
        return JsonResponse({"name": f"projects/{project_id}/messages/fake_message_id"})
    notification = message.get("notification") or {}
    storable = _storable_of(raw)
    row = OutboxMessage(
        provider=OutboxMessage.Provider.FCM,
        call_id=uuid.uuid4(),
        recipient=storable(token),
        subject=storable(str(notification.get("title") or "")),
        body=storable(str(notification.get("body") or "")),
        message_key=storable(data.get("engage_message_id", ""))[:255],
        headers={"project_id": project_id, "name": name},
        request=storable(payload),
    )
    return _stored([row], lambda: JsonResponse({"name": name}))


# --- Twilio -----------------------------------------------------------------------------


def _twilio_error(status: int, code: int, message: str) -> JsonResponse:
    return JsonResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status=status,
    )


def _basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return user, password


@local_provider
def twilio_messages(request: HttpRequest, account_sid: str) -> HttpResponse:
    credentials = _basic_credentials(request)
    if credentials is None or credentials[0] != account_sid or not credentials[1] or not account_sid.startswith("AC"):
        return _twilio_error(401, 20003, "Authenticate")
    raw = _body(request, OTHER_MAX_BYTES)
    if raw is None:
        return _twilio_error(413, 21617, "The request is too large.")
    form = {key: values[0] for key, values in parse_qs(raw.decode(errors="replace")).items()}
    to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    service = form.get("MessagingServiceSid", "")
    faulted = _faulted("twilio", [to], lambda status: _twilio_error(status, 20500, "local fault"))
    if faulted is not None:
        return faulted
    if not to:
        return _twilio_error(400, 21604, "A 'To' phone number is required.")
    hook = _magic(to)
    if hook == "fail-500-":
        return _twilio_error(500, 20500, "An internal server error has occurred")
    if hook == "rate-limit-":
        return _twilio_error(429, 20429, "Too Many Requests")
    if hook == "reject-":
        return _twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
    if hook != "slow-" and not E164.match(to):
        return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not sender and not service:
        return _twilio_error(400, 21603, "A 'From' phone number is required.")
    if sender and not E164.match(sender):
        return _twilio_error(
            400, 21212, f"The 'From' number {sender} is not a valid phone number, shortcode, or alphanumeric sender ID."
        )  # noqa: E501
    if not body:
        return _twilio_error(400, 21602, "Message body is required.")
    if len(body) > TWILIO_BODY_MAX:
        return _twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if hook == "slow-":
        _slow_sleep()
    sid = "SM" + secrets.token_hex(16)
    now = timezone.now()
    resource = {
        "sid": sid, "account_sid": account_sid, "to": to, "from": sender or None,
        "messaging_service_sid": service or None, "body": body, "status": "queued",
        "num_segments": str(_sms_segments(body)), "num_media": "0",
        "direction": "outbound-api", "api_version": "2010-04-01", "price": None, "price_unit": "USD",
        "error_code": None, "error_message": None, "date_created": format_datetime(now, usegmt=True),
        "date_updated": format_datetime(now, usegmt=True), "date_sent": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", "subresource_uris": {},
    }  # fmt: skip
    row = OutboxMessage(
        provider=OutboxMessage.Provider.TWILIO,
        call_id=uuid.uuid4(),
        recipient=storable(to),
        body=storable(body),
        headers={"from": storable(sender or service), "sid": sid},
        request=storable(form),
        received_at=now,
    )

    def accepted() -> HttpResponse:
        twilio_receipt_queue(callback=form.get("StatusCallback", ""), auth_token=credentials[1], sid=sid,
                             account_sid=account_sid, to=to, sender=sender)  # fmt: skip
        return JsonResponse(resource, status=201)

    return _stored([row], accepted)


def _sms_segments(body: str) -> int:
    # GSM-7 fits 160 characters in one segment (153 when split); anything else is UCS-2: 70 (67).
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


# --- Webhooks --------------------------------------------------------------------------


@local_provider
def webhook_receive(request: HttpRequest, name: str) -> HttpResponse:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    faulted = _faulted(
        "webhook",
        [request.headers.get("webhook-id", "")],
        lambda status: JsonResponse({"ok": False, "error": "local fault"}, status=status),
    )
    if faulted is not None:
        return faulted
    hook = _magic(name)
    if hook == "fail-500-":
        return JsonResponse({"ok": False, "error": "local test hook fail-500-"}, status=500)
    if hook == "rate-limit-":
        response = JsonResponse({"ok": False, "error": "local test hook rate-limit-"}, status=429)
        response["Retry-After"] = "2"
        return response
    if hook == "gone-":
        return JsonResponse({"ok": False, "error": "local test hook gone-"}, status=410)
    if hook == "reject-":
        return JsonResponse({"ok": False, "error": "local test hook reject-"}, status=400)
    if hook == "slow-":
        _slow_sleep()
    raw = _body(request, OTHER_MAX_BYTES)
    if raw is None:
        return JsonResponse({"ok": False, "error": "body too large"}, status=413)
    headers = {
        key: request.headers.get(key, "")
        for key in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
    }
    text = raw.decode(errors="replace")
    try:
        parsed = Webhook(settings.LOCAL_PROVIDERS_WEBHOOK_SECRET).verify(text, headers)
        valid = True
    except (WebhookVerificationError, ValueError):
        parsed, valid = None, False
    if parsed is None:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
    row = OutboxMessage(
        provider=OutboxMessage.Provider.WEBHOOK,
        call_id=uuid.uuid4(),
        recipient=storable(name),
        body=storable(text),
        message_key=storable(headers["webhook-id"])[:255],
        signature_valid=valid,
        headers=storable(headers),
        request=storable({"body": parsed}),
    )
    if not valid:
        return _stored([row], lambda: JsonResponse({"ok": False, "error": "signature did not verify"}, status=401))
    return _stored([row], lambda: JsonResponse({"ok": True}))
