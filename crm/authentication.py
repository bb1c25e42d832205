"""API authentication by project key, and the base classes that scope every
queryset to the caller's project.

- Write key (public, in apps and SDKs): HTTP Basic with the key as user name and
  an empty password, as the Segment HTTP API does. May only send events: the
  collectors (ingestion.api, not DRF) read it with `basic_auth_username`.
- Secret key (servers): `Authorization: Bearer <secret>`, the API's only
  authentication; sets `request.auth` to the Project and `request.user` to an
  ApiClient.
The view base classes that scope querysets live in crm.api.base (this module
must not import DRF views: settings name it, and views read settings at import).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from crm.models import Project
from crm.rate_limits import rate_limit_project, rate_limit_unknown_key
from crm.selectors import project_for_secret_key


@dataclass(frozen=True)
class ApiClient:
    """The caller of an API request: a project, through one of its keys."""

    project: Project
    key_kind: str  # "write" or "secret"

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> None:
        return None


def basic_auth_username(header: bytes) -> str | None:
    """The user name of an HTTP Basic header, or None when the header is not Basic."""
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(parts[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise exceptions.AuthenticationFailed("Malformed Basic credentials.") from None
    return decoded.partition(":")[0]


class SecretKeyAuthentication(BaseAuthentication):
    """A request without a valid secret key (none, malformed, unknown) counts
    against its client address's limit (RATE_LIMIT_UNKNOWN_KEY), here: DRF
    checks throttles only after authentication and permissions have passed."""

    def authenticate(self, request: Request) -> tuple[ApiClient, Project] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            _unknown_key_limit(request)
            return None
        if len(parts) != 2:
            _unknown_key_limit(request)
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <secret key>'.")
        project = project_for_secret_key(parts[1].decode("latin-1"))
        if project is None:
            _unknown_key_limit(request)
            raise exceptions.AuthenticationFailed("Unknown secret key.")
        return ApiClient(project=project, key_kind="secret"), project

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def _unknown_key_limit(request: Request) -> None:
    retry_after = rate_limit_unknown_key(meta=request.META)
    if retry_after:
        raise exceptions.Throttled(
            wait=retry_after, detail="Too many requests without a valid secret key from this address."
        )


class SecretKeyRateThrottle(BaseThrottle):
    """The secret key's rate limit (crm.rate_limits); DRF answers 429 with Retry-After."""

    def allow_request(self, request: Request, view: object) -> bool:
        self.retry_after = 0
        if isinstance(request.auth, Project):
            self.retry_after = rate_limit_project(project=request.auth, key_kind="secret")
        return not self.retry_after

    def wait(self) -> float | None:
        return self.retry_after or None


class HasProject(BasePermission):
    """Any request authenticated by one of the project keys."""

    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, Project)
