"""The recipient-facing pages of the delivery service: unsubscribe links, and
the open pixel and tracked links (/t/o/<token>, /t/c/<token>: delivery.tracking).

/u/<token>: GET shows a confirmation page with one button (link scanners and
prefetchers follow GETs, so a GET changes nothing); POST unsubscribes. The POST
is also RFC 8058's one-click unsubscribe: a mailbox provider POSTs
`List-Unsubscribe=One-Click` to the List-Unsubscribe URL with no cookie and no
CSRF token, so this view alone is CSRF-exempt. That is safe because the token
is signed (delivery.unsubscribe) and names the one profile and channel it
unsubscribes: a forged request can only do what the recipient's own link does."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from delivery.tracking import PIXEL_GIF, TrackingError, message_click_record, message_open_record, tracked_read
from delivery.unsubscribe import UnsubscribeError, unsubscribe_apply, unsubscribe_check

# RFC 8058, section 3.1: the body a one-click POST carries (the page's button sends it too).
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        if request.method == "GET":
            target = unsubscribe_check(token=token)
            return render(request, "delivery/unsubscribe.html", {"channel": target.channel, "done": False})
        if request.POST.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            return render(
                request,
                "delivery/unsubscribe.html",
                {"error": f"Expected the form field {ONE_CLICK_FIELD}={ONE_CLICK_VALUE} (RFC 8058)."},
                status=400,
            )
        target = unsubscribe_apply(token=token)
    except UnsubscribeError as error:
        return render(request, "delivery/unsubscribe.html", {"error": error.message}, status=error.status)
    return render(request, "delivery/unsubscribe.html", {"channel": target.channel, "done": True})


# --- opens and clicks (delivery.tracking) ------------------------------------------


@require_http_methods(["GET", "HEAD"])
def track_open(request: HttpRequest, token: str) -> HttpResponse:
    """The open pixel: a 1x1 GIF, never cached (each load must reach us). A
    token not signed here answers 400. HEAD (a prefetcher's probe) records nothing."""
    try:
        target = tracked_read(token, click=False)
    except TrackingError as error:
        return HttpResponse(str(error), status=400, content_type="text/plain")
    if request.method == "GET":
        message_open_record(project_id=target.project_id, message_id=target.message_id)
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private"
    return response


@require_http_methods(["GET", "HEAD"])
def track_click(request: HttpRequest, token: str) -> HttpResponse:
    """A tracked link: records the click (delivery.tracking.message_click_record)
    and redirects to the URL the token carries, and only there: a token not
    signed here answers 400 and redirects nowhere (no open redirect)."""
    try:
        target = tracked_read(token, click=True)
    except TrackingError as error:
        return HttpResponse(str(error), status=400, content_type="text/plain")
    if request.method == "GET":
        message_click_record(
            project_id=target.project_id,
            message_id=target.message_id,
            url=target.url,
            product_id=target.product_id,
            slot=target.slot,
        )
    response = HttpResponseRedirect(target.url)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
