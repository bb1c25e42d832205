"""Scale benchmark of the recommendation pipeline: collect, train, related products
for every product, evaluate, activate, on a project filled by generate_demo_data.

    createdb/migrate, then:
    python manage.py create_project "Scale bench"
    python manage.py generate_demo_data --project ID --users 500000 --products 100000 --events 5000000
    nice python bench/training.py --project ID            # on a real `ml` Celery worker (pool solo)
    nice python bench/training.py --project ID --in-process

With a worker (the production process), the task is sent through the broker
(CELERY_BROKER_URL) and peak_rss_mb is the worker's VmHWM; in-process it is this
process's peak RSS. The last line is one JSON object: events, products, users,
stages (seconds per stage), total_s, peak_rss_mb, plus the version's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from catalog.models import Product  # noqa: E402
from crm.models import Event, Profile  # noqa: E402
from recommendations import services  # noqa: E402
from recommendations.models import ModelVersion, VersionKind  # noqa: E402
from recommendations.tasks import recs_train_full_task  # noqa: E402


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_on_worker(project_id: int, timeout: float) -> tuple[ModelVersion, float, float]:
    env = {**os.environ, "DB_CONN_MAX_AGE": "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "ml", "--pool", "solo", "-n",
         f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        before = ModelVersion.objects.filter(project_id=project_id).values_list("pk", flat=True).first() or 0
        started = time.monotonic()
        recs_train_full_task.delay(project_id)
        while time.monotonic() - started < timeout:
            version = ModelVersion.objects.filter(project_id=project_id, pk__gt=before).first()
            if version is not None and version.finished_at is not None:
                return version, time.monotonic() - started, _hwm_mb(worker.pid)
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}")
            time.sleep(2)
        raise TimeoutError("the training run did not finish in time")
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def run_in_process(project_id: int) -> tuple[ModelVersion, float, float]:
    from recommendations.training.pipeline import run_full

    started = time.monotonic()
    version = services.modelversion_start(project_id=project_id, kind=VersionKind.FULL)
    if version is None:
        raise RuntimeError("a run of this project is in progress")
    version = run_full(version_id=version.pk, on_progress=None)
    return version, time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    counts = {
        "events": Event.objects.filter(project_id=args.project).count(),
        "products": Product.objects.filter(project_id=args.project).count(),
        "users": Profile.objects.filter(project_id=args.project).count(),
    }
    if args.in_process:
        version, wall, rss = run_in_process(args.project)
    else:
        version, wall, rss = run_on_worker(args.project, args.timeout)
    print(f"version {version.pk}: {version.status} {version.error}", file=sys.stderr)
    print(
        json.dumps(
            {
                **counts,
                "interactions": version.interactions,
                "stages": version.stage_seconds,
                "total_s": round(wall, 1),
                "peak_rss_mb": round(rss),
                "status": version.status,
                "metrics": version.metrics,
                "mode": "in-process" if args.in_process else "celery worker (ml queue, pool solo)",
            }
        )
    )


if __name__ == "__main__":
    main()
