"""The local provider server as its own WSGI application, for a process that
serves only it (the campaigns benchmark: gunicorn localproviders.wsgi:application).

/_local/ requests go straight to their view (the same functions as through
config.wsgi: the same checks, answers and outbox), without Django's middleware
stack: sessions, CSRF (these views are exempt anyway), authentication,
messages, axes and the console's security headers are for browsers, and on the
benchmark's 2 cores they cost more than the view itself for one FCM message a
request (firebase-admin sends one HTTP request per push). Everything else
(/healthz, the console) goes through Django as usual."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_django = get_wsgi_application()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402 - needs Django set up
from django.http import Http404, HttpResponse, JsonResponse  # noqa: E402
from django.urls import Resolver404, get_resolver  # noqa: E402

from localproviders import urls as local_urls  # noqa: E402

PREFIX = "/_local/"
_views = {pattern.callback for pattern in local_urls.urlpatterns}


def _answer(request: WSGIRequest) -> HttpResponse:
    try:
        match = get_resolver().resolve(request.path_info)
    except Resolver404:
        return JsonResponse({"error": "not found"}, status=404)
    if match.func not in _views:
        return JsonResponse({"error": "not found"}, status=404)
    try:
        return match.func(request, *match.args, **match.kwargs)
    except Http404 as error:
        return JsonResponse({"error": str(error)}, status=404)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if not environ.get("PATH_INFO", "").startswith(PREFIX):
        return _django(environ, start_response)
    response = _answer(WSGIRequest(environ))
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    return [response.content]
