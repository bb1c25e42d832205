"""Catalog import at scale: generate a CSV catalog, import it, print figures.

    DATABASE_URL=postgres://... CELERY_BROKER_URL=... SECRET_KEY=... \
        .venv/bin/python bench/catalog_import.py --rows 1000000 [--via api|cli] [--replace-after]

--via api (default, the production path): starts gunicorn and a Celery worker
(`-Q default`, prefork, one process) against DATABASE_URL, POSTs the file to
/api/v1/catalog/uploads with the project's secret key, polls the upload until
done. `seconds` is from the POST to the upload being done; `import_s` is the
worker's part (started_at to finished_at). `peak_rss_mb` is the peak resident
memory (VmHWM) of the worker process that ran the import.
--via cli: `manage.py import_catalog` in a child process; peak_rss_mb is its peak.

The file: 20 columns (the 11 known ones and 9 properties of every type), ~0.1%
bad rows (bad price, bad boolean, duplicate ids). The last line printed is one
JSON object with rows, seconds, rows_per_s and peak_rss_mb (and more).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = [
    "product_id", "name", "category", "price", "currency", "rating", "description", "image_url", "deeplink",
    "in_stock", "is_active", "brand", "color", "size", "material", "weight_kg", "launch_date", "on_sale",
    "review_count", "tags",
]  # fmt: skip
TOPS = {
    "Electronics": ["Phones", "Laptops", "Audio", "Cameras"],
    "Fashion": ["Shoes", "Clothing", "Accessories"],
    "Home": ["Kitchen", "Bedding", "Lighting"],
    "Sports": ["Fitness", "Outdoor", "Cycling"],
}
COLORS = ["red", "blue", "green", "black", "white", "grey", "navy", "beige"]
MATERIALS = ["cotton", "steel", "aluminium", "wood", "polyester", "leather", "glass"]
BRANDS = ["Acme", "Nordic", "Lumen", "Vertex", "Koa", "Harbor", "Pixel", "Summit", "Oak & Co", "Nimbus"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    tops = list(TOPS)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(1, rows + 1):
            top = tops[i % len(tops)]
            sub = TOPS[top][(i // 7) % len(TOPS[top])]
            brand = BRANDS[i % len(BRANDS)]
            name = f"{brand} {sub} item {i}"
            price = f"{rnd.uniform(1, 500):.2f}"
            in_stock = "yes" if rnd.random() > 0.08 else "no"
            if i % 1500 == 0:
                price = "n/a"  # a bad price
            if i % 2100 == 0:
                in_stock = "maybe"  # a bad boolean
            pid = f"P{i:08d}" if i % 3000 else f"P{i - 1:08d}"  # a duplicate id now and then
            writer.writerow(
                [
                    pid,
                    name,
                    f"{top} > {sub}",
                    price,
                    "USD",
                    f"{rnd.uniform(1, 5):.1f}",
                    f'{name}, a dependable {sub.lower()} product. Quoted, with a comma; and "quotes".',
                    f"https://cdn.example.com/img/{pid}.jpg",
                    f"shop://product/{pid}",
                    in_stock,
                    "true",
                    brand,
                    COLORS[i % len(COLORS)],
                    str(36 + i % 12),
                    MATERIALS[i % len(MATERIALS)],
                    f"{rnd.uniform(0.1, 20):.2f}",
                    f"20{20 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "true" if i % 5 == 0 else "false",
                    str(rnd.randint(0, 5000)),
                    f"tag{i % 50}",
                ]
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vmhwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _setup_project() -> tuple[int, str]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.core.management import call_command

    from crm.services import project_create

    call_command("migrate", verbosity=0)
    project, keys = project_create(name=f"bench-catalog-{uuid.uuid4().hex[:6]}")
    return project.pk, keys.secret_key or ""


def run_api(path: Path, project_id: int, secret: str, replace: bool) -> dict:
    # The generated file (298 MB for 1M rows) is past the default upload limit (100 MB).
    limit = str(max(path.stat().st_size, int(os.environ.get("CATALOG_UPLOAD_MAX_BYTES") or 0)))
    env = {**os.environ, "DB_CONN_MAX_AGE": "60", "CATALOG_UPLOAD_MAX_BYTES": limit}
    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "600"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "-c", "1", "-P", "prefork",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(3)  # the worker's pool
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\n'
            f"{'replace' if replace else 'upsert'}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + path.stat().st_size + len(tail)

        def body():  # noqa: ANN202 - a generator streamed by urllib
            yield head
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield tail

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/catalog/uploads",
            data=body(),
            method="POST",
            headers={
                "Authorization": f"Bearer {secret}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(size),
            },
        )
        t0 = time.monotonic()
        with urllib.request.urlopen(request, timeout=600) as response:
            upload = json.loads(response.read())
        upload_s = time.monotonic() - t0
        pool = _children(worker.pid)
        peak = 0.0
        status_url = f"http://127.0.0.1:{port}/api/v1/catalog/uploads/{upload['id']}"
        while True:
            peak = max([peak, *(_vmhwm_mb(pid) for pid in pool)])
            with urllib.request.urlopen(
                urllib.request.Request(status_url, headers={"Authorization": f"Bearer {secret}"}), timeout=30
            ) as response:
                upload = json.loads(response.read())
            if upload["state"] in ("done", "failed"):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        peak = max([peak, *(_vmhwm_mb(pid) for pid in pool)])
        web_peak = max([0.0, *(_vmhwm_mb(pid) for pid in _children(web.pid))])
    finally:
        for proc in (web, worker):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    from datetime import datetime

    import_s = (
        datetime.fromisoformat(upload["finished_at"]) - datetime.fromisoformat(upload["started_at"])
    ).total_seconds()
    return {
        "seconds": seconds,
        "upload_s": upload_s,
        "import_s": import_s,
        "peak_rss_mb": peak,
        "web_peak_rss_mb": web_peak,
        "upload": upload,
    }


def run_cli(path: Path, project_id: int, replace: bool) -> dict:
    cmd = [sys.executable, "manage.py", "import_catalog", str(path), "--project", str(project_id), "--no-progress"]
    if replace:
        cmd.append("--replace")
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    seconds = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    upload = json.loads(out.stdout.strip().splitlines()[-1])
    import_s = None
    if upload.get("started_at") and upload.get("finished_at"):
        from datetime import datetime

        import_s = (
            datetime.fromisoformat(upload["finished_at"]) - datetime.fromisoformat(upload["started_at"])
        ).total_seconds()
    return {"seconds": seconds, "import_s": import_s, "peak_rss_mb": peak, "upload": upload}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--via", choices=["api", "cli"], default="api")
    parser.add_argument("--replace-after", action="store_true", help="then import the same file again, replace mode")
    parser.add_argument("--keep-file", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("set DATABASE_URL (PostgreSQL)")
    if args.via == "api" and not os.environ.get("CELERY_BROKER_URL"):
        sys.exit("--via api needs CELERY_BROKER_URL")
    workdir = Path(tempfile.mkdtemp(prefix="catalog-bench-"))
    path = workdir / f"catalog-{args.rows}.csv"
    t0 = time.monotonic()
    generate(path, args.rows)
    gen_s = time.monotonic() - t0
    project_id, secret = _setup_project()
    runs = []
    for replace in [False, True] if args.replace_after else [False]:
        result = run_api(path, project_id, secret, replace) if args.via == "api" else run_cli(path, project_id, replace)
        result["mode"] = "replace" if replace else "upsert"
        runs.append(result)
        print(json.dumps(result), flush=True)
    if not args.keep_file:
        path.unlink()
    first = runs[0]
    print(
        json.dumps(
            {
                "rows": args.rows,
                "columns": len(HEADER),
                "file_mb": round(os.path.getsize(path) / 2**20, 1) if args.keep_file else None,
                "via": args.via,
                "seconds": round(first["seconds"], 2),
                "rows_per_s": round(args.rows / first["seconds"]),
                "peak_rss_mb": round(first["peak_rss_mb"], 1),
                "import_s": round(first["import_s"], 2) if first.get("import_s") else None,
                "upload_s": round(first["upload_s"], 2) if first.get("upload_s") else None,
                "web_peak_rss_mb": round(first["web_peak_rss_mb"], 1) if first.get("web_peak_rss_mb") else None,
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "created": first["upload"]["created"],
                "rejected": first["upload"]["rejected"],
                "generate_s": round(gen_s, 1),
                "runs": [
                    {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "upload"}
                    for r in runs
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
