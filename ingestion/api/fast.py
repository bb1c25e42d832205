"""A WSGI fast path for the collectors (`POST /v1/...`), in front of Django.

Every event of every app passes here, most of them one per request from the
mobile and browser SDKs. Django's request handling (request object, eight
middleware for sessions, CSRF, messages and the console's login, URL resolution,
response object) cost more than the collector's own work: ~0.9 ms of gunicorn CPU
per single-event request on the 2-core benchmark machine (docs/benchmarks.md).
The collector needs none of it: it authenticates by write key, reads no session
and writes no cookie. So config.wsgi sends the collector paths here and
everything else to Django; the answer comes from the same code as the Django
view (ingestion.api.views.collect_answer), which tests compare.

Kept from the skipped middleware (config.fastpath): the Host check (a
disallowed Host goes to Django, which answers 400), the HTTPS redirect (a
plain-HTTP request under SECURE_SSL_REDIRECT goes to Django), the security
headers (config.security), and the end-of-request database connection rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from config.fastpath import connection_release, fast_path_allowed, json_response
from ingestion.api.views import collect_answer
from ingestion.urls import PATHS

logger = logging.getLogger(__name__)

ROUTES = {f"/v1/{name}": kind for kind, names in PATHS.items() for name in names}
_ERROR = b'{"success": false, "code": "internal_error", "message": "internal error"}'


class WsgiRequest:
    """What collect_answer reads of a request, straight from the WSGI environ.
    The body is read as Django reads it: Content-Length bytes (none without
    it), refused past DATA_UPLOAD_MAX_MEMORY_SIZE."""

    __slots__ = ("META", "method")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.META = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()

    @property
    def body(self) -> bytes:
        try:
            length = int(self.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        return self.META["wsgi.input"].read(length) if length > 0 else b""


def collector_kind(environ: dict[str, Any]) -> str | None:
    """The collector kind when this request is ours, else None (Django answers it)."""
    kind = ROUTES.get(environ.get("PATH_INFO", ""))
    if kind is None or not fast_path_allowed(environ):
        return None
    return kind


def collector_app(environ: dict[str, Any], start_response: Callable[..., Any], kind: str) -> Iterable[bytes]:
    try:
        status, body, extra = collect_answer(WsgiRequest(environ), kind)
    except Exception:
        logger.exception("collector request to %s failed", environ.get("PATH_INFO"))
        status, body, extra = 500, _ERROR, {}
    finally:
        connection_release()
    return json_response(environ, start_response, status, body, extra.items())
