import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_django = get_wsgi_application()

# The recommendation call answers on every app screen: it skips Django's request
# handling (see recommendations/api/fast.py for what is measured and kept).
from recommendations.api.fast import with_fast_path  # noqa: E402 - needs Django set up

application = with_fast_path(_django)
