"""`python manage.py import_catalog FILE --project ID [--replace]`: import a catalog
CSV in this process, with a progress bar, and print the upload's summary as one
JSON line (the same summary the console and the API show)."""

from __future__ import annotations

import json
import os
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.csvfile import CatalogFileError
from catalog.models import CatalogUpload, UploadMode, UploadSource, UploadState
from catalog.selectors import upload_summary
from catalog.services import ImportBusy, catalog_import_run, catalog_upload_create, catalog_upload_start
from crm.models import Project


class Command(BaseCommand):
    help = "Import a catalog CSV file into a project (upsert, or --replace to deactivate missing products)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="path of the CSV file")
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument(
            "--replace", action="store_true", help="deactivate the project's products that are not in the file"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        if not os.path.isfile(path):
            raise CommandError(f"FILE: {path} is not a file")
        if not Project.objects.filter(pk=options["project"]).exists():
            raise CommandError(f"--project: project {options['project']} does not exist")
        mode = UploadMode.REPLACE if options["replace"] else UploadMode.UPSERT
        with open(path, "rb") as f:
            try:
                upload = catalog_upload_create(
                    project_id=options["project"],
                    file=File(f, name=os.path.basename(path)),
                    mode=mode,
                    source=UploadSource.CLI,
                    start=False,
                )
            except CatalogFileError as exc:
                raise CommandError(f"FILE: {exc}") from exc
        # Run here, in this process, rather than by a worker.
        catalog_upload_start(upload_id=upload.pk, enqueue=False)
        bar = tqdm(
            total=100.0,
            desc="import",
            bar_format="{l_bar}{bar} {postfix}",
            disable=options["no_progress"],
            file=self.stderr._out,  # the raw stream: OutputWrapper would end every redraw with a newline
        )

        def progress(current: CatalogUpload) -> None:
            bar.update(current.progress - bar.n)
            bar.set_postfix(rows=current.rows_processed, rejected=current.rejected, refresh=False)

        try:
            upload = catalog_import_run(upload_id=upload.pk, on_progress=progress)
        except ImportBusy as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        summary = upload_summary(upload)
        if upload.error_file:
            summary["error_file"] = upload.error_file.name
        self.stdout.write(json.dumps(summary))
        if upload.state != UploadState.DONE:
            raise CommandError(upload.message or f"import {upload.state}")
