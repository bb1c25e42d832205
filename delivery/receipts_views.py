"""Providers' receipt endpoints (delivery.receipts): thin views that check the
token and the signature, then call one service. CSRF-exempt: providers post
without cookies; each request is authenticated by its provider's signature,
checked with the settings of the project its token names.

    POST /hooks/sendgrid/<token>   SendGrid Event Webhook (signed ECDSA events)
    POST /hooks/twilio/<token>     Twilio status callback of one SMS

Answers: 204 recorded (a repeat too: the provider must stop retrying), 400 a
malformed token or body, 403 unsigned or a signature that does not verify, 404
a project without the key or token configured, 413 a body too large."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from delivery.receipts import (
    SENDGRID_EVENTS_MAX,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    HookError,
    sendgrid_events_record,
    sendgrid_signature_check,
    sendgrid_token_project,
    twilio_signature_check,
    twilio_status_record,
    twilio_token_target,
)


def _refused(error: HookError) -> HttpResponse:
    return HttpResponse(error.message, status=error.status, content_type="text/plain")


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest, token: str) -> HttpResponse:
    try:
        project_id = sendgrid_token_project(token)
        try:
            body = request.body
        except RequestDataTooBig:
            return HttpResponse("the body is too large", status=413, content_type="text/plain")
        sendgrid_signature_check(
            project_id=project_id,
            body=body,
            signature=request.headers.get(SENDGRID_SIGNATURE_HEADER, ""),
            timestamp=request.headers.get(SENDGRID_TIMESTAMP_HEADER, ""),
        )
        try:
            events = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HookError("body: not JSON (expected the Event Webhook's array of events)", 400) from None
        if not isinstance(events, list) or len(events) > SENDGRID_EVENTS_MAX:
            raise HookError(f"body: expected an array of at most {SENDGRID_EVENTS_MAX} events", 400)
    except HookError as error:
        return _refused(error)
    sendgrid_events_record(project_id=project_id, events=events)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest, token: str) -> HttpResponse:
    try:
        project_id, message_id = twilio_token_target(token)
        params = {key: request.POST.get(key, "") for key in request.POST}
        # Twilio signs the URL it was given: ours, built on PUBLIC_BASE_URL (a proxy
        # in front may change the host and scheme the request arrives with).
        url = f"{settings.PUBLIC_BASE_URL}{request.get_full_path()}"
        twilio_signature_check(
            project_id=project_id, url=url, params=params, signature=request.headers.get("X-Twilio-Signature", "")
        )
    except HookError as error:
        return _refused(error)
    twilio_status_record(project_id=project_id, message_id=message_id, params=params)
    return HttpResponse(status=204)
