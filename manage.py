#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if not os.environ.get("DATABASE_URL"):
        # The quickstart's database: an embedded PostgreSQL under var/ (config/embedded_db.py).
        from config.embedded_db import database_url_ensure, default_data_dir

        database_url_ensure(data_dir=default_data_dir())
    from django.core.management import execute_from_command_line

    from config.process import process_tune

    process_tune(kind="command")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
