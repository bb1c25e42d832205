import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crm.models import Project
from recommendations import services
from recommendations.models import VersionKind, VersionStatus
from recommendations.selectors import modelversion_summary


class Command(BaseCommand):
    help = (
        "Run the recommendation training pipeline in the foreground (the nightly run, or with --online the "
        "15-minute update) and print the version's summary as one JSON line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--online", action="store_true", help="update the active version instead of retraining")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project"]
        if not Project.objects.filter(pk=project_id).exists():
            raise CommandError(f"project {project_id} does not exist")
        services.recs_schedules_ensure(project_id=project_id)
        kind = VersionKind.ONLINE if options["online"] else VersionKind.FULL
        version = services.modelversion_start(project_id=project_id, kind=kind)
        if version is None:
            reason = "no active version to update" if options["online"] else "a training run is already in progress"
            raise CommandError(f"project {project_id}: {reason}")
        # Imported here: only a training run pays for TensorFlow.
        from recommendations.training.pipeline import run_full, run_online

        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if options["no_progress"]:
                return
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=stage, leave=True, file=self.stderr)
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()

        run = run_online if options["online"] else run_full
        version = run(version_id=version.pk, on_progress=progress)
        for bar in bars.values():
            bar.close()
        self.stdout.write(json.dumps(modelversion_summary(version)))
        if version.status == VersionStatus.FAILED:
            raise CommandError(f"training failed: {version.error}")
