"""Signed unsubscribe links: one per (project, profile, channel), so a message's
link and its List-Unsubscribe header (RFC 8058) need no stored token.

The token is django.core.signing over the three ids with a salt of its own; it
does not expire (a link in a year-old email must still work) and cannot be
forged or pointed at another profile. The view that reads it sets the profile's
subscription on that channel (crm.services.profile_set_subscription)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

_SALT = "delivery.unsubscribe"


@dataclass(frozen=True)
class UnsubscribeTarget:
    project_id: int
    profile_id: int
    channel: str


def unsubscribe_token(*, project_id: int, profile_id: int, channel: str = "email") -> str:
    return signing.dumps([project_id, profile_id, channel], salt=_SALT, compress=False)


def unsubscribe_url(*, project_id: int, profile_id: int, channel: str = "email") -> str:
    """The absolute link a recipient follows (GET: a confirmation page; POST: one click)."""
    token = unsubscribe_token(project_id=project_id, profile_id=profile_id, channel=channel)
    return f"{settings.PUBLIC_BASE_URL}/u/{token}"


def unsubscribe_target(token: str) -> UnsubscribeTarget | None:
    """What a token names, or None when it was not signed by this deployment."""
    try:
        project_id, profile_id, channel = signing.loads(token, salt=_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not (isinstance(project_id, int) and isinstance(profile_id, int) and isinstance(channel, str)):
        return None
    return UnsubscribeTarget(project_id=project_id, profile_id=profile_id, channel=channel)
