"""`python manage.py import_events FILE`: back-fill history from newline-delimited JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crm.models import Project
from ingestion.importer import IMPORT_CHUNK, ImportLineRejected, ImportStopped, events_import


class Command(BaseCommand):
    help = (
        "Import Segment messages (one JSON object per line; .gz files too) through the same "
        "validation and store as the collectors, parsed in a second process. The project is --project, "
        "or each line's writeKey. Stopped or failed, it resumes when run again (stored events are skipped)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="newline-delimited JSON, optionally gzip-compressed (.gz)")
        parser.add_argument("--project", type=int, help="project id (else each line's writeKey)")
        parser.add_argument("--chunk", type=int, default=IMPORT_CHUNK, help="messages per transaction")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        if options["project"] is not None and not Project.objects.filter(pk=options["project"]).exists():
            raise CommandError(f"project {options['project']} does not exist")
        if options["chunk"] < 1:
            raise CommandError("--chunk must be positive")
        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="import", disable=options["no_progress"])

        def rejected(line: ImportLineRejected) -> None:
            self.stderr.write(f"line {line.line}: {line.field}: {line.message}")

        try:
            result = events_import(
                path=path,
                project_id=options["project"],
                chunk=options["chunk"],
                on_progress=bar.update,
                on_rejected=rejected,
            )
        except ImportStopped as exc:
            bar.close()
            self.stdout.write(json.dumps(exc.result.as_dict()))
            raise CommandError(str(exc)) from exc
        bar.close()
        self.stdout.write(json.dumps(result.as_dict()))
