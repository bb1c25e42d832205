"""Channel settings that point the real client libraries at this server: what
the quickstart gives its demo project and what the tests use.

The FCM service account is a real one in shape (an RSA key google-auth signs its
token requests with), made here, with `token_uri` this server's token endpoint."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings

from localproviders.receipts import local_sendgrid_public_key

LOCAL_PREFIX = "/_local"
LOCAL_FCM_PROJECT = "engage-local"


def local_service_account(*, base_url: str, project_id: str = LOCAL_FCM_PROJECT) -> dict[str, Any]:
    """A new service account key (2048-bit RSA) whose token_uri is the local token endpoint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"engage-push@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": f"{base_url.rstrip('/')}{LOCAL_PREFIX}/google/token",
    }


def local_channel_settings(*, base_url: str, service_account: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings of each channel (email, push, sms, webhook) for the local server at `base_url`."""
    root = base_url.rstrip("/") + LOCAL_PREFIX
    return {
        "email": {
            "api_key": "SG.local-provider-key",
            "from_email": "shop@example.com",
            "host": f"{root}/sendgrid",
            # The local SendGrid signs its Event Webhook posts with this key's private half.
            "event_webhook_public_key": local_sendgrid_public_key(),
        },
        "push": {"service_account": service_account, "fcm_url": f"{root}/fcm"},
        "sms": {
            "account_sid": "AC" + "0" * 31 + "1",
            "auth_token": "local-provider-auth-token",
            "from_number": "+15005550006",
            "base_url": f"{root}/twilio",
        },
        "webhook": {"secret": settings.LOCAL_PROVIDERS_WEBHOOK_SECRET},
    }


def local_webhook_url(*, base_url: str, name: str) -> str:
    return f"{base_url.rstrip('/')}{LOCAL_PREFIX}/webhooks/{name}"
