"""A WSGI fast path for `GET /api/v1/users/{id}/recommendations`, in front of Django.

The recommendation call is the one an app makes on every screen. Measured on
the 2-core benchmark machine, Django's request handling (request object, eight
middleware, URL resolution, response object) cost more than the recommendation
itself: a bare gunicorn app answered ~5,000 requests/s, Django's /healthz ~1,200.
So config.wsgi sends exactly this route here and everything else to Django.

What the skipped middleware would have done for this route is done here: the
Host header is checked against ALLOWED_HOSTS, plain-HTTP requests under
SECURE_SSL_REDIRECT are handed to Django (which redirects them), the response
carries nosniff and, over HTTPS, HSTS. The answer itself comes from the same
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
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections
from django.http import QueryDict
from django.http.request import split_domain_port, validate_host

from recommendations.api.views import answer, user_recommendations_run

logger = logging.getLogger(__name__)

PREFIX = "/api/v1/users/"
SUFFIX = "/recommendations"
_REASONS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 500: "500 Internal Server Error"}


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
    if _is_secure(environ) is False and settings.SECURE_SSL_REDIRECT:
        return None
    if not _host_allowed(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")):
        return None  # Django answers 400 Bad Request for a disallowed host
    return path[len(PREFIX) : -len(SUFFIX)]


_hosts_seen: dict[tuple[str, tuple[str, ...]], bool] = {}


def _host_allowed(host: str) -> bool:
    """ALLOWED_HOSTS validation, remembered per Host header (a service sees a few)."""
    key = (host, tuple(settings.ALLOWED_HOSTS))
    allowed = _hosts_seen.get(key)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
        if len(_hosts_seen) < 1000:  # bounded: Host is client input
            _hosts_seen[key] = allowed
    return allowed


def _is_secure(environ: dict[str, Any]) -> bool:
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header:
        return environ.get(header[0], "").split(",")[0].strip() == header[1]
    return environ.get("wsgi.url_scheme") == "https"


def recommendations_app(environ: dict[str, Any], start_response: Callable[..., Any], user_id: str) -> Iterable[bytes]:
    try:
        try:
            status, body = _answer(environ, user_id)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise
            # The kept-alive connection broke while idle: once more, on a new one.
            logger.warning("database connection lost; answering %r on a new connection", user_id)
            connection.close()
            status, body = _answer(environ, user_id)
    except Exception:
        logger.exception("recommendations for %r failed", user_id)
        status, body = 500, b'{"error": "internal_error", "message": "internal error"}'
    finally:
        _connection_release()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if settings.SECURE_HSTS_SECONDS and _is_secure(environ):
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        headers.append(("Strict-Transport-Security", value))
    start_response(_REASONS.get(status, f"{status} Error"), headers)
    return [body]


def _answer(environ: dict[str, Any], user_id: str) -> tuple[int, bytes]:
    return answer(
        authorization=environ.get("HTTP_AUTHORIZATION", ""),
        query=QueryDict(environ.get("QUERY_STRING", "")),
        run=user_recommendations_run(user_id),
        default_limit=10,
    )


def _connection_release() -> None:
    """Django's close_old_connections at the end of a request, minus the health
    check it would schedule for the next one. Never inside a transaction (the
    test framework wraps each test in one and keeps its connection)."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the proxy looks it up per attribute
    if db.connection is None or db.in_atomic_block:
        return
    expired = db.close_at is not None and time.monotonic() >= db.close_at
    if expired or db.errors_occurred or not db.get_autocommit():
        db.close()


def with_fast_path(django_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        user_id = route_user_id(environ)
        if user_id is None:
            return django_app(environ, start_response)
        return recommendations_app(environ, start_response, user_id)

    return application
