"""LOCAL_PROVIDERS: on with DEBUG (make run), off in production unless asked for."""

from tests.crm.test_settings import PRODUCTION, _run

PRINT = "import django; django.setup(); from django.conf import settings; print(settings.LOCAL_PROVIDERS)"
DATABASE = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage"}


def test_local_providers_follow_debug_unless_set():
    assert _run(PRINT, {**PRODUCTION, **DATABASE}).stdout.strip() == "False"
    assert _run(PRINT, {**DATABASE, "DEBUG": "1"}).stdout.strip() == "True"
    assert _run(PRINT, {**DATABASE, "DEBUG": "1", "LOCAL_PROVIDERS": "0"}).stdout.strip() == "False"
    assert _run(PRINT, {**PRODUCTION, **DATABASE, "LOCAL_PROVIDERS": "1"}).stdout.strip() == "True"


def test_a_bad_value_names_the_variable():
    result = _run(PRINT, {**PRODUCTION, **DATABASE, "LOCAL_PROVIDERS": "sometimes"})

    assert result.returncode != 0
    assert "LOCAL_PROVIDERS must be a boolean" in result.stderr
