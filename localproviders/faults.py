"""Provider outages on demand: the local server answers every send request as
a failing provider for a while, then recovers, so tests can show that delivery
loses nothing and sends nothing twice through an outage.

Unlike the recipient prefixes of localproviders.views (one message fails, the
same way, every time), a fault concerns every request of the chosen providers
while it lasts:

    "500"      the provider's own 500 (SendGrid's error body, FCM INTERNAL,
               Twilio 20500, a webhook receiver's 500), nothing stored;
    "timeout"  the request hangs LOCAL_PROVIDERS_SLOW_MS and then gets a 503,
               nothing stored: a provider that never processed it (the
               client, with a shorter timeout, has given up by then). The
               `slow-` prefix covers the other case, a request processed after
               the client gave up.

Google's token endpoint is never faulted: the outage is the sending API's.

The switch is this process's memory, like the server's outbox writer: it acts
on the server threads of this process (the tests' live server). Every refused
request is logged with the message keys it carried (`refusals()`), so a test
can check when each message was tried."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

FAULT_MODES = ("500", "timeout")
FAULT_PROVIDERS = ("sendgrid", "fcm", "twilio", "webhook")


@dataclass(frozen=True)
class Refusal:
    at: float  # time.time() when the request arrived
    provider: str
    mode: str
    keys: tuple[str, ...]  # the message keys it carried (as OutboxMessage.message_key)


_lock = threading.Lock()
_fault: tuple[str, frozenset[str], float | None] | None = None
_refusals: list[Refusal] = []


def fault_set(*, mode: str, providers: tuple[str, ...] = FAULT_PROVIDERS, seconds: float | None = None) -> None:
    """Fail every request of `providers` with `mode` from now on, for `seconds`
    (None: until fault_clear). ValueError naming the argument on a bad one."""
    global _fault
    if mode not in FAULT_MODES:
        raise ValueError(f"mode: one of {', '.join(FAULT_MODES)}, got {mode!r}")
    unknown = sorted(set(providers) - set(FAULT_PROVIDERS))
    if unknown or not providers:
        raise ValueError(f"providers: among {', '.join(FAULT_PROVIDERS)}, got {list(providers)!r}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds: above 0, got {seconds!r}")
    with _lock:
        _fault = (mode, frozenset(providers), None if seconds is None else time.monotonic() + seconds)


def fault_clear() -> None:
    """The providers answer normally again; the log of refusals is emptied."""
    global _fault
    with _lock:
        _fault = None
        _refusals.clear()


def fault_for(provider: str, keys: list[str] | tuple[str, ...] = ()) -> str:
    """The fault mode `provider`'s request meets now ("" when none), logged with
    the request's message `keys` when it is refused."""
    with _lock:
        if _fault is None:
            return ""
        mode, providers, until = _fault
        if provider not in providers or (until is not None and time.monotonic() >= until):
            return ""
        _refusals.append(Refusal(at=time.time(), provider=provider, mode=mode, keys=tuple(keys)))
        return mode


def refusals() -> list[Refusal]:
    """Every request refused since the last fault_clear, in arrival order."""
    with _lock:
        return list(_refusals)
