"""The settings module: environment-driven, fail-loud, deploy-checked."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "prod-Hk3v9QwZr8Lp2Xy7Tn4Bm6Cd1Fg5Jk0Sa3Ue8Wi2Oq9Rt7Yz4",
    "ALLOWED_HOSTS": "engage.example.com",
}


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A clean environment: the test process's own defaults (tests/pytest_env.py) must not leak in.
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": "/tmp/engage-settings-test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = _run("import django; django.setup()", {"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_bad_boolean_names_the_variable():
    result = _run("import django; django.setup()", {**PRODUCTION, "DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_check_deploy_is_clean_with_production_values():
    code = (
        "import sys, django; django.setup();"
        "from django.core.management import call_command;"
        "call_command('check', deploy=True, fail_level='WARNING')"
    )
    result = _run(code, {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage"})
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_refuses_to_start_without_a_postgresql_database_url():
    result = _run("import django; django.setup()", {**PRODUCTION})
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr
    result = _run("import django; django.setup()", {**PRODUCTION, "DATABASE_URL": "sqlite:///tmp/x.sqlite3"})
    assert result.returncode != 0
    assert "DATABASE_URL must name a PostgreSQL server" in result.stderr


def test_manage_py_runs_on_the_embedded_server_and_stops_it(tmp_path):
    """No DATABASE_URL: manage.py starts PostgreSQL under VAR_DIR/postgres, on a
    socket only, keeps what was written for the next command, and stops the
    server when the last command exits."""
    var = tmp_path / "var"
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    env = {**base, "DEBUG": "1", "VAR_DIR": str(var)}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    code = (
        "from django.db import connection as c; c.ensure_connection();"
        "print(c.vendor, c.settings_dict['NAME'], c.settings_dict['HOST'], c.pg_version // 10000);"
        "cur = c.cursor(); cur.execute('CREATE TABLE IF NOT EXISTS kept (v int)');"
        "cur.execute('INSERT INTO kept VALUES (7)')"
    )
    first = manage("shell", "-c", code)
    assert first.returncode == 0, first.stderr
    vendor, name, host, major = first.stdout.splitlines()[-1].split()
    assert (vendor, name, major) == ("postgresql", "engage", "18")
    assert host.startswith("/")  # a Unix socket directory, no TCP port
    data = var / "postgres"
    assert (data / "PG_VERSION").read_text().strip() == "18"
    assert not (data / "postmaster.pid").exists()  # stopped with the command

    second = manage("shell", "-c", "from django.db import connection as c; cur = c.cursor();"
                    "cur.execute('SELECT sum(v) FROM kept'); print(cur.fetchone()[0])")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "7"
    assert not (data / "postmaster.pid").exists()

    # A command ended by SIGTERM (a service manager, `kill`) stops the server too.
    running = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", "import time; print('up', flush=True); time.sleep(60)"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert "up\n" in iter(running.stdout.readline, "")  # the shell's banner comes first
    assert (data / "postmaster.pid").exists()
    running.terminate()
    assert running.wait(timeout=30) == 128 + 15
    assert not (data / "postmaster.pid").exists()


def test_services_are_taken_from_the_environment():
    code = (
        "import django; django.setup(); from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CELERY_TASK_ALWAYS_EAGER,"
        " s.CACHES['default']['BACKEND'], s.STORAGES['default']['BACKEND'])"
    )
    env = {
        **PRODUCTION,
        "DATABASE_URL": "postgres://u@db.internal:5432/engage",
        "CELERY_BROKER_URL": "amqp://guest:guest@mq.internal:5672//",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "AWS_STORAGE_BUCKET_NAME": "engage-media",
    }
    result = _run(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "engage",
        "False",
        "django.core.cache.backends.redis.RedisCache",
        "storages.backends.s3.S3Storage",
    ]


def test_web_process_does_not_import_tensorflow_or_pandas():
    code = (
        "import sys, django; django.setup();"
        "import config.wsgi, config.urls; from django.urls import get_resolver; get_resolver().url_patterns;"
        "from django.contrib import admin; admin.autodiscover();"
        "print(sorted(m for m in ('tensorflow', 'pandas') if m in sys.modules))"
    )
    result = _run(code, {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_process_tuning_is_set_by_the_entry_point_not_by_importing_the_apps():
    """Importing the apps changes no interpreter setting; config.wsgi (the web
    entry point) sets them all (config/process.py)."""
    env = {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage", "WEB_SWITCH_INTERVAL_MS": "1"}
    probe = "import csv, gc, sys; print(csv.field_size_limit(), gc.get_freeze_count() > 0, sys.getswitchinterval())"
    apps = _run("import django; django.setup(); import catalog.csvfile, catalog.services, recommendations.serving;"
                + probe, env)  # fmt: skip
    assert apps.returncode == 0, apps.stderr
    assert apps.stdout.split() == ["131072", "False", "0.005"]
    web = _run("import config.wsgi;" + probe, env)
    assert web.returncode == 0, web.stderr
    assert web.stdout.split() == [str(16 * 1024 * 1024), "True", "0.001"]


def test_a_redis_broker_is_refused_unless_its_loss_is_accepted():
    """The ingest queue's guarantee (every 200 stored) holds on RabbitMQ only."""
    env = {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage"}
    show = (
        "import django; django.setup(); from django.conf import settings;"
        "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS)"
    )
    result = _run(show, {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert result.returncode != 0
    assert "CELERY_BROKER_URL is a Redis broker, which can lose accepted events" in result.stderr
    result = _run(show, {**env, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "CELERY_BROKER_ACCEPT_LOSS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'visibility_timeout': 3600}"
    result = _run("import django; django.setup()", {**env, "CELERY_BROKER_URL": "sqs://queue"})
    assert result.returncode != 0
    assert "CELERY_BROKER_URL must be amqp://… (RabbitMQ), not sqs://…" in result.stderr


def test_the_ingest_queue_type_is_checked_and_declared():
    env = {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/engage"}
    env["CELERY_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    show = (
        "import django; django.setup(); from django.conf import settings;"
        "print([(q.name, q.queue_arguments) for q in getattr(settings, 'CELERY_TASK_QUEUES', [])])"
    )
    result = _run(show, {**env, "INGEST_QUEUE_TYPE": "quorum"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[('default', None), ('ingest', {'x-queue-type': 'quorum'}), ('ml', None), ('sends', None), ('segments', None)]"
    )
    result = _run(show, env)
    assert (result.returncode, result.stdout.strip()) == (0, "[]")
    result = _run(show, {**env, "INGEST_QUEUE_TYPE": "stream"})
    assert result.returncode != 0
    assert "INGEST_QUEUE_TYPE must be classic or quorum, got 'stream'" in result.stderr
