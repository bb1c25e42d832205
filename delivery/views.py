"""The recipient-facing page of the delivery service: unsubscribe links.

/u/<token>: GET shows a confirmation page with one button (link scanners and
prefetchers follow GETs, so a GET changes nothing); POST unsubscribes. The POST
is also RFC 8058's one-click unsubscribe: a mailbox provider POSTs
`List-Unsubscribe=One-Click` to the List-Unsubscribe URL with no cookie and no
CSRF token, so this view alone is CSRF-exempt. That is safe because the token
is signed (delivery.unsubscribe) and names the one profile and channel it
unsubscribes: a forged request can only do what the recipient's own link does."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

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
