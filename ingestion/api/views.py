"""The collectors: Segment's HTTP Tracking API.

`POST /v1/{identify,track,page,screen,group,alias}` take one message;
`POST /v1/batch` (also `/v1/import`, and `/v1/b` as analytics-swift and
analytics-kotlin call it) takes `{"batch": [...], "sentAt", "context"}`.
The one-letter paths of analytics.js (`/v1/t`, `/v1/p`, ...) are served too.

Plain Django views, orjson and the hand-written checks of ingestion.spec rather
than DRF: this is the hottest path of the platform (every event of every app
passes here) and DRF's request wrapping, negotiation and serializers would
cost more than the rest of the request together. The view only validates and
puts the messages on the queue (ingestion.publisher); it writes nothing to the
database. Errors are JSON `{"success": false, "code": ..., "message": ..., "field": ...}`:
`code` and `message` because the official Python SDKs (Segment's and
RudderStack's) read exactly those two keys of an error answer.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from crm.authentication import basic_auth_username
from crm.models import Project
from crm.rate_limits import rate_limit_project, rate_limit_unknown_key
from crm.selectors import project_for_write_key
from ingestion import hooks
from ingestion.publisher import BrokerUnavailable, batch_enqueue
from ingestion.spec import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    MessageError,
    message_normalize,
    nesting_bounded,
    nesting_check,
    parse_time,
)

logger = logging.getLogger(__name__)

_CORS = {
    # Browser SDKs post from the customer's site: any origin may send events
    # (the write key is public; it only allows sending).
    "Access-Control-Allow-Origin": "*",
}
_PREFLIGHT = {
    **_CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, AnonymousId",
    "Access-Control-Max-Age": "86400",
}
_SUCCESS = orjson.dumps({"success": True})
_CODES = {
    400: "invalid_request",
    401: "invalid_write_key",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_encoding",
    429: "rate_limited",
    503: "service_unavailable",
}


class _Refusal(Exception):
    """The whole request is refused with `status`."""

    def __init__(self, status: int, error: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.extra = status, error, field, extra


# An answer before it becomes an HTTP response: status, JSON body, headers.
Answer = tuple[int, bytes, dict[str, str]]


def _respond(status: int, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    return status, body, headers or _CORS


def _refusal_response(refusal: _Refusal) -> Answer:
    payload: dict[str, Any] = {"success": False, "code": _CODES[refusal.status], "message": refusal.error}
    if refusal.field:
        payload["field"] = refusal.field
    payload.update(refusal.extra)
    headers = dict(_CORS)
    if refusal.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="write key"'
    elif refusal.status == 503:
        headers["Retry-After"] = str(settings.INGEST_RETRY_AFTER)
    elif refusal.status == 429:
        headers["Retry-After"] = str(refusal.extra["retry_after"])
    return _respond(refusal.status, orjson.dumps(payload), headers)


def _read_body(request: HttpRequest, limit: int) -> bytes:
    """The request body, decompressed, at most `limit` bytes (413 beyond)."""
    too_big = _Refusal(413, f"request body is larger than {limit // 1024} KB")
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            raise too_big
    except ValueError:
        raise _Refusal(400, "Content-Length must be a number") from None
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_big from None
    except OSError:  # the server's read timed out (a body slower than its socket timeout) or the client left
        raise _Refusal(408, "the request body did not arrive in time") from None
    if len(body) > limit:
        raise too_big
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise _Refusal(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        # Inflate at most one byte past the limit: a small bomb stays small.
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise _Refusal(400, "body is not valid gzip") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise too_big
    return data


def _project_from_header(request: HttpRequest) -> Project | None:
    header = request.META.get("HTTP_AUTHORIZATION")
    if not header:
        return None
    try:
        write_key = basic_auth_username(header.encode("latin-1"))
    except (AuthenticationFailed, UnicodeEncodeError):
        raise _Refusal(401, "malformed Basic credentials") from None
    if write_key is None:
        return None  # not Basic: the body may carry writeKey
    project = project_for_write_key(write_key)
    if project is None:
        raise _Refusal(401, "unknown write key")
    return project


def _project_from_body(body: dict[str, Any]) -> Project:
    write_key = body.get("writeKey")
    if write_key in (None, ""):
        raise _Refusal(
            401,
            "a write key is required: HTTP Basic with the write key as user name and an empty "
            "password, or a writeKey field in the body",
            "writeKey",
        )
    project = project_for_write_key(write_key) if isinstance(write_key, str) else None
    if project is None:
        raise _Refusal(401, "unknown write key", "writeKey")
    return project


def _admit(project: Project) -> None:
    """The write key's rate limit (crm.rate_limits)."""
    retry_after = rate_limit_project(project=project, key_kind="write")
    if retry_after:
        raise _Refusal(429, f"too many requests for this write key; retry in {retry_after} s", retry_after=retry_after)


def _collect(request: HttpRequest, kind: str) -> Answer:
    received_at = timezone.now()
    is_batch = kind == "batch"
    project = _project_from_header(request)
    if project is not None:
        _admit(project)  # before the body is read
    body_bytes = _read_body(request, MAX_REQUEST_BYTES if is_batch else MAX_MESSAGE_BYTES)
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError as exc:
        # Also invalid UTF-8, a lone surrogate ("\ud800", which PostgreSQL could
        # not store), a number past the double range (1e999) and nesting
        # past the parser's 1,024 levels.
        raise _Refusal(400, f"malformed JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise _Refusal(400, "the body must be a JSON object", "body")
    if project is None:
        project = _project_from_body(body)
        _admit(project)

    received_text = received_at.isoformat()
    # Most bodies have too few brackets to nest anything too deep: their
    # messages skip the nesting check.
    check_depth = not nesting_bounded(body_bytes)
    rejected: list[dict[str, Any]] = []
    if not is_batch:
        try:
            messages = [
                message_normalize(
                    body,
                    project_id=project.pk,
                    received_at=received_at,
                    type_hint=kind,
                    check_size=False,  # the body limit above is the message limit
                    check_depth=check_depth,
                    received_at_text=received_text,
                )
            ]
        except MessageError as exc:
            raise _Refusal(400, exc.error, exc.field) from None
    else:
        raw_messages = body.get("batch")
        if not isinstance(raw_messages, list):
            raise _Refusal(400, "batch is required: a list of messages", "batch")
        if len(raw_messages) > MAX_BATCH_MESSAGES:
            raise _Refusal(413, f"batch has {len(raw_messages)} messages; at most {MAX_BATCH_MESSAGES}", "batch")
        try:
            batch_sent_at = parse_time(body.get("sentAt"), "sentAt")
        except MessageError as exc:
            raise _Refusal(400, exc.error, exc.field) from None
        batch_context = body.get("context")
        if batch_context is not None and not isinstance(batch_context, dict):
            raise _Refusal(400, "context must be an object", "context")
        if check_depth and batch_context:
            try:
                nesting_check({"context": batch_context})
            except MessageError as exc:
                raise _Refusal(400, exc.error, exc.field) from None
        check_size = len(body_bytes) > MAX_MESSAGE_BYTES
        messages = []
        for index, raw in enumerate(raw_messages):
            try:
                messages.append(
                    message_normalize(
                        raw,
                        project_id=project.pk,
                        received_at=received_at,
                        batch_sent_at=batch_sent_at,
                        batch_context=batch_context,
                        check_size=check_size,
                        check_depth=check_depth,
                        received_at_text=received_text,
                    )
                )
            except MessageError as exc:
                rejected.append({"index": index, **exc.as_dict()})
        if rejected and not messages:
            raise _Refusal(400, "no valid message in the batch", "batch", rejected=rejected)

    if messages:
        try:
            batch_enqueue(project_id=project.pk, messages=messages)
        except BrokerUnavailable as exc:
            logger.warning("answering 503: %s", exc)
            raise _Refusal(503, "the event queue is unavailable; retry later") from None

    extras = hooks.response_extras(project, messages) if messages else {}
    if not rejected and not extras:
        return _respond(200, _SUCCESS)
    payload: dict[str, Any] = {"success": True, **extras}
    if rejected:
        payload["rejected"] = rejected
    return _respond(200, orjson.dumps(payload))


def collect_answer(request: Any, kind: str) -> Answer:
    """The answer to one collector request. `request` needs `method`, `META`
    and `body` (raising RequestDataTooBig past the upload limit): a Django
    request, or the WSGI fast path's (ingestion.api.fast)."""
    if request.method == "OPTIONS":
        return 204, b"", _PREFLIGHT
    if request.method != "POST":
        status, body, headers = _refusal_response(_Refusal(405, "use POST"))
        return status, body, {**headers, "Allow": "POST, OPTIONS"}
    try:
        return _collect(request, kind)
    except _Refusal as refusal:
        if refusal.status == 401:
            # No write key, or a wrong one: limited per client address.
            retry_after = rate_limit_unknown_key(meta=request.META)
            if retry_after:
                refusal = _Refusal(
                    429,
                    f"too many requests without a valid write key from this address; retry in {retry_after} s",
                    retry_after=retry_after,
                )
        return _refusal_response(refusal)


@csrf_exempt
def collect(request: HttpRequest, kind: str) -> HttpResponse:
    """One collector endpoint; `kind` is a message type or "batch"."""
    status, body, headers = collect_answer(request, kind)
    if status == 204:
        return HttpResponse(status=204, headers=headers)
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response
