"""The local provider server's receipts: what SendGrid and Twilio post back
after accepting a message, so the quickstart and the tests exercise the same
receipt endpoints (delivery.receipts) as production.

- SendGrid: after accepting a mail, a `delivered` event per recipient (a
  `bounce` for a recipient whose local part starts with "bounce"), posted as
  one Event Webhook batch to the URL of the project the message belongs to
  (delivery.receipts.sendgrid_webhook_url: this server stands in for the
  SendGrid account of every project, whose webhook points there), signed with
  the local ECDSA key (local_sendgrid_public_key is what the quickstart puts
  in the demo project's email settings).
- Twilio: the message's StatusCallback gets `delivered` (`undelivered`, code
  30003, for a number starting with "+1555000999"), signed with the account's
  auth token as Twilio signs (X-Twilio-Signature).

Why not post from the request's own thread: this server often runs in the same
process (and on the same few threads) as the endpoints it posts to, and the
receipt's handler would wait for the message's row while the request that sends
it is still inside its transaction. So receipts are queued and posted after the
response: by a background thread (LOCAL_PROVIDERS_RECEIPTS "background", the
default, after LOCAL_PROVIDERS_RECEIPTS_DELAY_MS), or only when a test calls
receipts_flush() ("manual"), or never ("off").
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings

logger = logging.getLogger(__name__)

POST_TIMEOUT_S = 5.0
TWILIO_UNDELIVERED_PREFIX = "+1555000999"


@dataclass(frozen=True)
class _Post:
    url: str
    body: bytes
    headers: dict[str, str]


_pending: list[_Post] = []
_lock = threading.Lock()
_wake = threading.Event()
_thread: threading.Thread | None = None


def _private_key() -> ec.EllipticCurvePrivateKey:
    """The local SendGrid account's signing key: derived from SECRET_KEY, so every
    process of a deployment (and the quickstart that configures it) agrees on it."""
    seed = int.from_bytes(hashlib.sha256(f"localproviders.sendgrid:{settings.SECRET_KEY}".encode()).digest(), "big")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order
    return ec.derive_private_key(seed % (order - 1) + 1, ec.SECP256R1())


def local_sendgrid_public_key() -> str:
    """The verification key of the local SendGrid's Event Webhook, as SendGrid's
    Mail Settings show one (base64 DER): the email setting event_webhook_public_key."""
    der = (
        _private_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def _sendgrid_signed(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = _private_key().sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def sendgrid_receipts_queue(*, recipients: list[tuple[str, dict[str, str]]], sg_message_id: str) -> int:
    """Queue the events of an accepted mail: (address, custom_args) per recipient.
    Grouped per project (one batch each); recipients naming no message of ours are left out."""
    if settings.LOCAL_PROVIDERS_RECEIPTS == "off":
        return 0
    from delivery.models import Message
    from delivery.receipts import sendgrid_webhook_url

    ids = {int(a["message_id"]) for _, a in recipients if str(a.get("message_id", "")).isdigit()}
    project_of = dict(Message.objects.filter(pk__in=ids).values_list("pk", "project_id"))
    batches: dict[int, list[dict[str, Any]]] = {}
    now = int(time.time())
    for index, (address, args) in enumerate(recipients):
        message_id = str(args.get("message_id", ""))
        project_id = project_of.get(int(message_id)) if message_id.isdigit() else None
        if project_id is None:
            continue
        bounce = address.split("@")[0].startswith("bounce")
        event: dict[str, Any] = {
            "email": address,
            "timestamp": now,
            "event": "bounce" if bounce else "delivered",
            "sg_event_id": base64.urlsafe_b64encode(hashlib.sha256(f"{sg_message_id}:{index}".encode()).digest()[:16])
            .decode()
            .rstrip("="),
            "sg_message_id": f"{sg_message_id}.{index}",
            **args,
        }
        if bounce:
            event.update(type="bounce", reason="550 5.1.1 The email account does not exist (local test hook bounce)")
        else:
            event["response"] = "250 OK"
        batches.setdefault(project_id, []).append(event)
    for project_id, events in batches.items():
        body = json.dumps(events).encode()
        _enqueue(_Post(sendgrid_webhook_url(project_id=project_id), body, _sendgrid_signed(body)))
    return sum(len(e) for e in batches.values())


def twilio_receipt_queue(*, callback: str, auth_token: str, sid: str, account_sid: str, to: str, sender: str) -> None:
    """Queue the status callback of an accepted SMS, signed as Twilio signs it."""
    if settings.LOCAL_PROVIDERS_RECEIPTS == "off" or not callback.startswith(("http://", "https://")):
        return
    from twilio.request_validator import RequestValidator

    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": account_sid, "To": to, "From": sender,
              "ApiVersion": "2010-04-01"}  # fmt: skip
    if to.startswith(TWILIO_UNDELIVERED_PREFIX):
        params.update(MessageStatus="undelivered", SmsStatus="undelivered", ErrorCode="30003")
    else:
        params.update(MessageStatus="delivered", SmsStatus="delivered")
    signature = RequestValidator(auth_token).compute_signature(callback, params)
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    _enqueue(_Post(callback, body, headers))


def _enqueue(post: _Post) -> None:
    with _lock:
        _pending.append(post)
    if settings.LOCAL_PROVIDERS_RECEIPTS == "background":
        _thread_ensure()
        _wake.set()


def receipts_pending() -> int:
    with _lock:
        return len(_pending)


def receipts_flush() -> list[int]:
    """Post every queued receipt now, in this thread; returns their HTTP statuses
    (0: unreachable). Tests call it with LOCAL_PROVIDERS_RECEIPTS = "manual"."""
    with _lock:
        posts = list(_pending)
        _pending.clear()
    return [_post(post) for post in posts]


def _post(post: _Post) -> int:
    request = urllib.request.Request(post.url, data=post.body, headers=post.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:  # noqa: S310 - our own URLs
            return response.status
    except urllib.error.HTTPError as error:
        logger.warning("local receipt to %s answered %s", post.url, error.code)
        return error.code
    except (urllib.error.URLError, OSError) as error:
        logger.warning("local receipt to %s failed: %s", post.url, error)
        return 0


def _thread_ensure() -> None:
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_loop, name="localproviders-receipts", daemon=True)
        _thread.start()


def _loop() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        # After the response: the sender has committed its record meanwhile.
        time.sleep(settings.LOCAL_PROVIDERS_RECEIPTS_DELAY_MS / 1000)
        receipts_flush()
