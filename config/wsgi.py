import gc
import os
import sys

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_django = get_wsgi_application()

# The recommendation call answers on every app screen: it skips Django's request
# handling (see recommendations/api/fast.py for what is measured and kept).
from recommendations.api.fast import with_fast_path  # noqa: E402 - needs Django set up

application = with_fast_path(_django)

# Everything loaded so far (Django, the apps, their modules) lives as long as the
# process: the garbage collector's full passes need not walk it on every run.
gc.collect()
gc.freeze()

# How long a thread may hold the interpreter before another one gets it. In the
# single-threaded processes of the recommendation API, the tracking flush thread
# held requests up for Python's default 5 ms (the p99); 1 ms is set there
# (WEB_SWITCH_INTERVAL_MS=1). Threaded servers (the collectors' gunicorn gthread)
# keep the default: there the request threads would hand over 5 times as often.
if settings.WEB_SWITCH_INTERVAL_MS:
    sys.setswitchinterval(settings.WEB_SWITCH_INTERVAL_MS / 1000)
