"""Signed unsubscribe links: one per (project, profile, channel), so a message's
link and its List-Unsubscribe header (RFC 8058) need no stored token.

The token is django.core.signing's Signer format over the three ids with a salt
of its own: it does not expire (a link in a year-old email must still work),
cannot be forged or pointed at another profile, and is the same every time for
the same profile (no timestamp). Tokens are made in bulk (every marketing email
of a campaign gets one at claim), so they are made by delivery.signed, which
derives Signer's HMAC key once per secret; a test checks that Signer reads
them. The view that reads one sets the profile's subscription on that channel
(crm.services.profile_set_subscription)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from crm.models import Profile
from crm.services import profile_set_subscription
from delivery.signed import signed_object

_SALT = "delivery.unsubscribe"
# The channels a profile has a subscription flag for (crm.services.profile_set_subscription).
SUBSCRIPTION_CHANNELS = ("email", "push", "sms")


class UnsubscribeError(Exception):
    """A token that names nothing this deployment can unsubscribe: `status` is the
    HTTP answer (400 a token not signed here or naming no channel with
    subscriptions, 404 a profile that no longer exists)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class UnsubscribeTarget:
    project_id: int
    profile_id: int
    channel: str


def unsubscribe_token(*, project_id: int, profile_id: int, channel: str = "email") -> str:
    """signing.Signer(salt=_SALT).sign_object([project_id, profile_id, channel]), made faster."""
    return signed_object([project_id, profile_id, channel], salt=_SALT)


def unsubscribe_url(*, project_id: int, profile_id: int, channel: str = "email") -> str:
    """The absolute link a recipient follows (GET: a confirmation page; POST: one click)."""
    token = unsubscribe_token(project_id=project_id, profile_id=profile_id, channel=channel)
    return f"{settings.PUBLIC_BASE_URL}/u/{token}"


def unsubscribe_target(token: str) -> UnsubscribeTarget | None:
    """What a token names, or None when it was not signed by this deployment."""
    try:
        project_id, profile_id, channel = signing.Signer(salt=_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not (isinstance(project_id, int) and isinstance(profile_id, int) and isinstance(channel, str)):
        return None
    return UnsubscribeTarget(project_id=project_id, profile_id=profile_id, channel=channel)


def unsubscribe_check(*, token: str) -> UnsubscribeTarget:
    """What `token` unsubscribes, checked without changing anything (the GET
    page): signed here, a channel with subscriptions, and the profile still in
    the project the token names. Raises UnsubscribeError otherwise."""
    target = unsubscribe_target(token)
    if target is None:
        raise UnsubscribeError("This unsubscribe link is not valid.")
    if target.channel not in SUBSCRIPTION_CHANNELS:
        raise UnsubscribeError(f"This link names no channel with subscriptions ({target.channel!r}).")
    if not Profile.objects.filter(pk=target.profile_id, project_id=target.project_id).exists():
        raise UnsubscribeError("This subscriber no longer exists.", status=404)
    return target


def unsubscribe_apply(*, token: str) -> UnsubscribeTarget:
    """Unsubscribe the profile `token` names from its channel (subscription
    False: marketing on that channel is skipped `unsubscribed` from the next
    claim on). Idempotent: a second click changes nothing more. Raises
    UnsubscribeError for a token unsubscribe_check refuses."""
    target = unsubscribe_check(token=token)
    profile_set_subscription(
        project_id=target.project_id, profile_id=target.profile_id, channel=target.channel, subscribed=False
    )
    return target
