"""What Django's middleware does for a request, for the WSGI fast paths that skip
it (recommendations.api.fast, ingestion.api.fast): the Host check against
ALLOWED_HOSTS, the HTTPS test behind a proxy, the security headers of every
answer (config.security), and the end-of-request database connection rules."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http.request import split_domain_port, validate_host

from config.security import security_headers as _security_headers

_hosts_seen: dict[tuple[str, tuple[str, ...]], bool] = {}


def host_allowed(host: str) -> bool:
    """ALLOWED_HOSTS validation, remembered per Host header (a service sees a few)."""
    key = (host, tuple(settings.ALLOWED_HOSTS))
    allowed = _hosts_seen.get(key)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
        if len(_hosts_seen) < 1000:  # bounded: Host is client input
            _hosts_seen[key] = allowed
    return allowed


def is_secure(environ: dict[str, Any]) -> bool:
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header:
        return environ.get(header[0], "").split(",")[0].strip() == header[1]
    return environ.get("wsgi.url_scheme") == "https"


def fast_path_allowed(environ: dict[str, Any]) -> bool:
    """False when Django must answer instead: a plain-HTTP request under
    SECURE_SSL_REDIRECT (Django redirects it) or a disallowed Host (400)."""
    if settings.SECURE_SSL_REDIRECT and not is_secure(environ):
        return False
    return host_allowed(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))


def security_headers(environ: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The headers Django's middleware would add (config.security, one definition)."""
    return _security_headers(secure=is_secure(environ))


def json_response(
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    status: int,
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """Start a fast path's JSON answer (no body for 204) with its security headers."""
    if status == 204:
        head = [("Content-Length", "0")]
    else:
        head = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(f"{status} {HTTPStatus(status).phrase}", [*head, *headers, *security_headers(environ)])
    return [body]


def connection_release() -> None:
    """Django's close_old_connections at the end of a request, minus the health
    check it would schedule for the next one. Never inside a transaction (the
    test framework wraps each test in one and keeps its connection)."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the proxy looks it up per attribute
    if db.connection is None or db.in_atomic_block:
        return
    expired = db.close_at is not None and time.monotonic() >= db.close_at
    if expired or db.errors_occurred or not db.get_autocommit():
        db.close()
