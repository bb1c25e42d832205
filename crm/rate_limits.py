"""Request rate limits: per project key (write key: the collectors; secret key:
the APIs) and, for requests with an unknown or missing key, per client address.

The algorithm: a fixed window counter (requests in the current window of
`seconds`, reset at its end; `Retry-After` is the time to that end), counted in
the shared cache so the limit holds across processes and hosts, with each
process counting locally in between:

- Every process keeps, per key and window, the shared count as last seen and
  the requests it admitted since. A request is refused at once, without a round
  trip, when those two reach the limit: the shared count only grows within a
  window, so such a refusal is never wrong.
- It adds its own requests to the shared count (one pipelined `SET NX EX` +
  `INCRBY` on Redis: one round trip) every SYNC_SECONDS, or sooner when they
  reach 1% of the limit or a sixteenth of what is left of it. Far from the
  limit that is about one round trip per key per process every 0.1 s, whatever
  the request rate; near it, every request syncs, so small limits are exact.
  Between syncs the processes together may admit a little more than the limit
  (a few percent at most, with up to 16 processes per host).
- Measured on the shared 2-core development machine: a request between syncs
  costs 0.8-1.3 µs in the counter and ~2 µs with its settings and key (the
  recommendation call costs ~500 µs of CPU); a sync is one Redis round trip
  (0.1-0.35 ms there), which at 2,000 requests/s per process adds ~1 µs per
  request (1.8 µs in all, measured with Redis).

With the per-process memory cache (no REDIS_URL, the quickstart) the local
counts are the whole truth and limits hold per process. Any other Django cache
backend is counted through cache.add/incr (two round trips per sync). When the
shared cache cannot be reached the limits hold per process (fail open): a cache
outage must not refuse every event.

Why not DRF's throttles: they keep a list of timestamps per key in the cache,
read and written on every request (two round trips and a pickle of up to
`limit` floats), and cannot serve the WSGI fast paths.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest

from crm.models import Project

logger = logging.getLogger(__name__)

SYNC_SECONDS = 0.1
# Keys remembered per process (projects and client addresses); windows past their
# end are dropped when it is reached, and all of them if that is not enough.
MAX_KEYS = 50_000


class SharedCounter(Protocol):
    def add(self, key: str, count: int, ttl: int) -> int:
        """Add `count` to the shared counter `key` (created with `ttl` seconds to
        live) and return its new value."""


class RedisCounter:
    """On Django's Redis cache, through its own connection pool: one round trip."""

    def __init__(self, cache: RedisCache) -> None:
        self.cache = cache

    def add(self, key: str, count: int, ttl: int) -> int:
        full_key = self.cache.make_key(key)
        client = self.cache._cache.get_client(full_key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.set(full_key, 0, ex=ttl, nx=True)  # the window's key expires with it
        pipe.incrby(full_key, count)
        return int(pipe.execute()[1])


class CacheCounter:
    """Any other Django cache backend (Memcached, database): add, then incr."""

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache

    def add(self, key: str, count: int, ttl: int) -> int:
        self.cache.add(key, 0, ttl)
        try:
            return self.cache.incr(key, count)
        except ValueError:  # expired between the two calls
            self.cache.add(key, count, ttl)
            return count


def default_counter() -> SharedCounter | None:
    """The counter of the default cache; None for the per-process memory cache."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        return RedisCounter(cache)
    if isinstance(cache, LocMemCache):
        return None
    return CacheCounter(cache)


class _Window:
    __slots__ = ("ends", "index", "pending", "sending", "synced", "synced_at")

    def __init__(self, index: int, ends: float) -> None:
        self.index = index
        self.ends = ends
        self.synced = 0  # the shared count when last synced (this process's sent requests included)
        self.pending = 0  # admitted here since, not yet sent
        self.sending = 0  # being sent by one thread now
        self.synced_at = 0.0


class RateLimiter:
    """Fixed window counters, local per process and synced to a shared counter
    (see the module docstring). Thread-safe: the round trip happens outside the
    lock, by one thread per key at a time."""

    def __init__(self, counter: SharedCounter | None | str = "default") -> None:
        # "default": the default cache's counter, looked up per sync (tests change the settings).
        self._counter = counter
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._failed_at = 0.0
        self._namespace = "rl"

    def clear(self) -> None:
        """Forget the counts: this process's, and (as seen from this process) the
        shared ones, by counting under new keys from now on. For tests."""
        with self._lock:
            self._windows.clear()
            self._namespace = f"rl{uuid.uuid4().hex[:8]}"

    def hit(self, key: str, requests: int, seconds: int) -> int:
        """Count one request on `key`, limited to `requests` per `seconds`.
        Returns 0 when it is admitted, else the seconds until the window ends
        (Retry-After)."""
        now = time.time()
        index = int(now // seconds)
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.index != index:
                if len(self._windows) >= MAX_KEYS:
                    self._prune(now)
                window = self._windows[key] = _Window(index, (index + 1) * seconds)
            used = window.synced + window.sending + window.pending
            if used >= requests:
                return _retry_after(window, now)
            window.pending += 1
            send = 0
            if not window.sending and self._counter is not None:
                left = requests - window.synced
                threshold = max(1, min(requests // 100, left // 16))
                if window.pending >= threshold or now - window.synced_at >= SYNC_SECONDS:
                    send, window.sending, window.pending = window.pending, window.pending, 0
        if not send:
            return 0
        total = self._send(f"{self._namespace}:{key}:{index}", send, seconds + 1)
        with self._lock:
            window.sending -= send
            window.synced = max(window.synced, total) if total is not None else window.synced + send
            window.synced_at = now
            used = window.synced + window.sending + window.pending
        # This request was counted; refused if it took the shared count past the limit.
        return _retry_after(window, now) if used > requests else 0

    def _send(self, key: str, count: int, ttl: int) -> int | None:
        counter = default_counter() if isinstance(self._counter, str) else self._counter
        if counter is None:
            return None
        try:
            return counter.add(key, count, ttl)
        except Exception:  # noqa: BLE001 - any cache failure: count in this process
            now = time.monotonic()
            if now - self._failed_at > 60:
                self._failed_at = now
                logger.warning("rate limits counted per process: the shared cache failed", exc_info=True)
            return None

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if w.ends <= now]:
            del self._windows[key]
        if len(self._windows) >= MAX_KEYS:
            self._windows.clear()


def _retry_after(window: _Window, now: float) -> int:
    return max(1, math.ceil(window.ends - now))


limiter = RateLimiter()


def rate_limits_clear() -> None:
    """Forget the counts (tests: each starts from none, Redis or not)."""
    limiter.clear()


def rate_limit_project(*, project: Project, key_kind: str) -> int:
    """Count a request authenticated by the project's write or secret key
    (`key_kind`), under RATE_LIMIT_WRITE_KEY / RATE_LIMIT_SECRET_KEY or the
    project's own number of requests per that window. 0 when admitted, else
    the Retry-After in seconds."""
    if key_kind == "write":
        requests, seconds = settings.RATE_LIMIT_WRITE_KEY
        override = project.rate_limit_write_key
    else:
        requests, seconds = settings.RATE_LIMIT_SECRET_KEY
        override = project.rate_limit_secret_key
    return limiter.hit(f"{key_kind[0]}{project.pk}", override or requests, seconds)


def rate_limit_unknown_key(*, meta: Mapping[str, Any]) -> int:
    """Count a request whose key is unknown, malformed or missing, per client
    address (RATE_LIMIT_UNKNOWN_KEY). 0 when admitted, else the Retry-After."""
    requests, seconds = settings.RATE_LIMIT_UNKNOWN_KEY
    return limiter.hit(f"a{client_address(meta)}", requests, seconds)


def client_address(meta: Mapping[str, Any]) -> str:
    """The client's address: REMOTE_ADDR, or where CLIENT_IP_HEADER is set (only
    behind a proxy that sets it: clients can send any header), the entry that
    the CLIENT_IP_PROXY_COUNT-th proxy from us appended to it. IPv6 addresses
    count per /64, the block one subscriber gets."""
    address = meta.get("REMOTE_ADDR") or ""
    header = settings.CLIENT_IP_HEADER
    if header:
        entries = [e.strip() for e in str(meta.get(header, "")).split(",") if e.strip()]
        if entries:
            address = entries[-min(settings.CLIENT_IP_PROXY_COUNT, len(entries))]
    if ":" in address:
        try:
            return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address) + "/64"
        except ValueError:
            return address
    return address


def request_client_address(request: HttpRequest) -> str:
    """client_address of a Django request (django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_address(request.META)
