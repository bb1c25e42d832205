"""Channel registry: `channel_get("email")` returns the email channel.

Each channel lives in its own module and is imported on first use, so its
provider SDK (sendgrid, firebase-admin, twilio) loads only in processes that send
on it.
"""

from __future__ import annotations

import importlib
import threading

from delivery.channels.base import Channel, Outgoing, PermanentError, Result, TemporaryError

__all__ = ["CHANNEL_NAMES", "Channel", "Outgoing", "PermanentError", "Result", "TemporaryError", "channel_get"]

CHANNEL_NAMES = ("email", "push", "sms", "webhook")

_channels: dict[str, Channel] = {}
_lock = threading.Lock()


def channel_get(name: str) -> Channel:
    """The channel named `name`; ValueError for a name that is none of CHANNEL_NAMES."""
    channel = _channels.get(name)
    if channel is not None:
        return channel
    if name == "in_app":
        # Shown by the collector's answer and recorded then (delivery.services.record): nothing to send.
        raise ValueError("in_app has no provider channel: in-app messages are recorded when shown")
    if name not in CHANNEL_NAMES:
        raise ValueError(f"unknown channel {name!r}: one of {', '.join(CHANNEL_NAMES)}")
    with _lock:
        if name not in _channels:
            module = importlib.import_module(f"delivery.channels.{name}")
            _channels[name] = module.channel
        return _channels[name]
