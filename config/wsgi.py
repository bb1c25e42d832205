import gc
import os
import sys

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_django = get_wsgi_application()

# The recommendation call answers on every app screen and the collectors take
# every event: both skip Django's request handling (see recommendations/api/fast.py
# and ingestion/api/fast.py for what is measured and what is kept).
from ingestion.api.fast import collector_app, collector_kind  # noqa: E402 - needs Django set up
from recommendations.api.fast import recommendations_app, route_user_id  # noqa: E402


def application(environ, start_response):  # noqa: ANN001, ANN201 - the WSGI callable
    user_id = route_user_id(environ)
    if user_id is not None:
        return recommendations_app(environ, start_response, user_id)
    kind = collector_kind(environ)
    if kind is not None:
        return collector_app(environ, start_response, kind)
    return _django(environ, start_response)


# Everything loaded so far (Django, the apps, their modules) lives as long as the
# process: the garbage collector's full passes need not walk it on every run.
gc.collect()
gc.freeze()

# How long a thread may hold the interpreter before another one gets it. In the
# single-threaded processes of the recommendation API, the tracking flush thread
# held requests up for Python's default 5 ms (the p99); 1 ms is set there
# (WEB_SWITCH_INTERVAL_MS=1). Threaded servers (the collectors' uWSGI threads, the
# console's gunicorn gthread) keep the default: with 1 ms the collectors' p99 was
# 127 instead of ~50 ms (docs/benchmarks.md).
if settings.WEB_SWITCH_INTERVAL_MS:
    sys.setswitchinterval(settings.WEB_SWITCH_INTERVAL_MS / 1000)
