"""Writes of the delivery service, one module per concern, imported from here:
enqueue (rows before any provider call, tasks after commit), claim (the rules,
inside the claiming transaction), send (the provider call outside any
transaction, results recorded), sweeper (stale claims, due rows), settings
(a project's delivery rules and provider settings)."""

from delivery.services.claim import Claimed, messages_claim
from delivery.services.enqueue import (
    EnqueueResult,
    MessageIn,
    message_ids_reserve,
    messages_dispatch,
    messages_enqueue,
)
from delivery.services.send import SendSummary, messages_send
from delivery.services.settings import channel_settings_save
from delivery.services.sweeper import messages_sweep

__all__ = [
    "Claimed",
    "EnqueueResult",
    "MessageIn",
    "SendSummary",
    "channel_settings_save",
    "message_ids_reserve",
    "messages_claim",
    "messages_dispatch",
    "messages_enqueue",
    "messages_send",
    "messages_sweep",
]
