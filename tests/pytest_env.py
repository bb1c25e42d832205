"""Loaded with `-p` (see pyproject) before pytest-django reads the settings.

Tests run with DEBUG off, like production; they only need a key and plain HTTP.
Anything already in the environment (DATABASE_URL, CELERY_BROKER_URL) is kept.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("STATIC_MANIFEST", "0")
# Served recommendations are written at once, so tests can read them back.
os.environ.setdefault("RECS_TRACKING_FLUSH_SECONDS", "0")
# No background preload threads in tests (their connections would not see the
# test's transaction); tests call recommendations.serving.related_preload directly.
os.environ.setdefault("RECS_SERVE_PRELOAD_MAX_ROWS", "0")
os.environ.setdefault("WHITENOISE_USE_FINDERS", "1")
# Tests must not write into a developer's var/ folder.
os.environ.setdefault("VAR_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "engage-test-var"))
os.makedirs(os.path.join(os.environ["VAR_DIR"], "static"), exist_ok=True)
