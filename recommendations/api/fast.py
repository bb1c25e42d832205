"""A WSGI fast path for `GET /api/v1/users/{id}/recommendations`, in front of Django.

The recommendation call is the one an app makes on every screen. Measured on
the 2-core benchmark machine, Django's request handling (request object, eight
middleware, URL resolution, response object) cost more than the recommendation
itself: a bare gunicorn app answered ~5,000 requests/s, Django's /healthz ~1,200.
So config.wsgi sends exactly this route here and everything else to Django.

What the skipped middleware would have done for this route is done here: the
Host header is checked against ALLOWED_HOSTS, plain-HTTP requests under
SECURE_SSL_REDIRECT are handed to Django (which redirects them), the response
carries the same security headers as Django's (config.security). The answer itself comes from the same
code as the Django view (recommendations.api.views.answer).

Database connections: Django's request signals would run a health check
(`SELECT 1`, a round trip as long as the recommendation's own query) before
every request. Here the kept-alive connection is used as it is; if it turns out
broken (a database restart), the request is answered once more on a new
connection. A connection past CONN_MAX_AGE, or one that saw an error, is closed
after the request, as Django's request_finished would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import InterfaceError, OperationalError, connection
from django.http import QueryDict

from config.fastpath import connection_release, fast_path_allowed, json_response
from recommendations.api.views import answer, user_recommendations_run

logger = logging.getLogger(__name__)

PREFIX = "/api/v1/users/"
SUFFIX = "/recommendations"


def route_user_id(environ: dict[str, Any]) -> str | None:
    """The user id when this request is ours, else None (Django answers it)."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    raw = environ.get("PATH_INFO", "")
    if not (raw.startswith(PREFIX) and raw.endswith(SUFFIX)) or len(raw) <= len(PREFIX) + len(SUFFIX):
        return None
    # WSGI hands the path as latin-1 text of the raw bytes; URLs are UTF-8.
    try:
        path = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    if not fast_path_allowed(environ):
        return None  # Django redirects to HTTPS, or answers 400 for a disallowed host
    return path[len(PREFIX) : -len(SUFFIX)]


def recommendations_app(environ: dict[str, Any], start_response: Callable[..., Any], user_id: str) -> Iterable[bytes]:
    try:
        try:
            status, body, headers = _answer(environ, user_id)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise
            # The kept-alive connection broke while idle: once more, on a new one.
            logger.warning("database connection lost; answering %r on a new connection", user_id)
            connection.close()
            status, body, headers = _answer(environ, user_id)
    except Exception:
        logger.exception("recommendations for %r failed", user_id)
        status, body, headers = 500, b'{"error": "internal_error", "message": "internal error"}', {}
    finally:
        connection_release()
    return json_response(environ, start_response, status, body, headers.items())


def _answer(environ: dict[str, Any], user_id: str) -> tuple[int, bytes, dict[str, str]]:
    return answer(
        meta=environ,
        query=QueryDict(environ.get("QUERY_STRING", "")),
        run=user_recommendations_run(user_id),
        default_limit=10,
    )
