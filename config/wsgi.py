import gc
import os
import sys

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

# A background thread of the web process (recommendation tracking's flush) holds
# the interpreter for up to this long before a request's thread gets it back;
# Python's default of 5 ms showed up as the p99 of the recommendation call.
sys.setswitchinterval(0.001)
