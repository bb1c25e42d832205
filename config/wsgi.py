import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from config.process import process_tune

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


# Everything is loaded: tune this web process (heap frozen, switch interval; config/process.py).
process_tune(kind="web", switch_interval_ms=settings.WEB_SWITCH_INTERVAL_MS)
