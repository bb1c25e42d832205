"""Channel registry: `channel_get("email")` returns the email channel (delivery.channels.base)."""

from delivery.channels.base import Channel, Outgoing, PermanentError, Result, TemporaryError, channel_get

__all__ = ["Channel", "Outgoing", "PermanentError", "Result", "TemporaryError", "channel_get"]
