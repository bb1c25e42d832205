"""Response security headers.

`security_headers` is what Django's SecurityMiddleware and XFrameOptionsMiddleware
put on every answer, computed from the same settings, for the WSGI fast paths
that skip them (config.fastpath); tests compare the two. The console also gets
a Content-Security-Policy (Django 5.2 has none built in): its pages, the
catalog's included, run no inline script or style, so the policy forbids them.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

# Computed once per process for each of HTTP and HTTPS (tests that change a setting clear it).
_computed: dict[bool, tuple[tuple[str, str], ...]] = {}


def security_headers(*, secure: bool) -> tuple[tuple[str, str], ...]:
    """SecurityMiddleware's and XFrameOptionsMiddleware's headers for an answer
    over HTTPS (`secure`) or plain HTTP."""
    headers = _computed.get(secure)
    if headers is None:
        headers = _computed[secure] = tuple(_headers(secure))
    return headers


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    _computed.clear()


def _headers(secure: bool) -> list[tuple[str, str]]:
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = [v.strip() for v in policy.split(",")] if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
    if settings.SECURE_HSTS_SECONDS and secure:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    return headers


class ContentSecurityPolicyMiddleware:
    """CONSOLE_CONTENT_SECURITY_POLICY on the console's answers (/admin/)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.CONSOLE_CONTENT_SECURITY_POLICY
        if policy and request.path_info.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", policy)
        return response
