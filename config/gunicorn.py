"""gunicorn's settings for the web processes (the console and the APIs):

    gunicorn -c config/gunicorn.py config.wsgi:application --bind 0.0.0.0:8000 --workers 4 --threads 8

gunicorn has no limit on how long a request's body may take to arrive: a client
that sends a Content-Length and then less (or one byte a minute) holds a
request thread (gthread) or the whole worker (sync, until --timeout kills it).
Here every read of a request's body waits at most WEB_BODY_TIMEOUT seconds for
data; then the read fails and the request ends. A buffering proxy in front
(README, "Running in production") is the real protection: it hands over only
complete bodies.
"""

from __future__ import annotations

from typing import Any

from config.env import env_int

# Seconds a read of a request's body may wait for the client's next bytes.
BODY_TIMEOUT = env_int("WEB_BODY_TIMEOUT", 10)

worker_class = "gthread"
# A sync worker silent this long is killed; a gthread worker's main thread stays
# responsive while a request thread waits, so there BODY_TIMEOUT is the bound.
timeout = env_int("WEB_TIMEOUT", 30)
graceful_timeout = env_int("WEB_GRACEFUL_TIMEOUT", 30)


def pre_request(worker: Any, req: Any) -> None:
    """Before the app reads the body: a timeout on the request's socket (the
    headers are read; the body is read by the app through this socket)."""
    sock = getattr(getattr(req, "unreader", None), "sock", None)
    if sock is not None and BODY_TIMEOUT > 0:
        sock.settimeout(BODY_TIMEOUT)
