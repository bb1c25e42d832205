"""Campaigns benchmark: one email campaign and one push campaign to a store of
1,000,000 profiles, sent through real Celery workers on `sends` to the local
provider server (a real gunicorn process serving localproviders, storing every
message in its outbox). Prints one JSON object on its last line.

    .venv/bin/python bench/campaigns.py [--users 1000000] [--sizes 100000,1000000]
        [--path campaign|delivery] [--workers 2] [--database engage_bench_campaigns] [--prepare]

1. Data (skipped when var/bench_campaigns.json names a database generated less
   than a day ago with the same sizes, unless --prepare): a fresh database,
   migrated, one project, `generate_demo_data` (profiles with emails, push
   tokens on their devices, recent items; at nice 10), `train_recommendations`
   (so that the three recommended products come from a real active model
   version), ANALYZE.
2. The stack: the local provider server (gunicorn, gthread, LOCAL_PROVIDERS=1,
   `localproviders.wsgi`), --workers Celery worker processes on `sends`
   (prefork), RabbitMQ. The project's email and push settings point at the server.
3. For each audience size (the first N profiles by id; --sizes), fresh workers,
   then one email campaign and then one push campaign, each to that audience,
   each after a warm-up campaign of --warmup-profiles other profiles (a worker
   in service has the model's related lists, the catalog and the provider
   clients loaded; a fresh one loads them on its first chunk):
   - `--path campaign` (the product's path): campaigns.sending starts the run
     (run_start), its planner and chunk tasks on `sends` assign, render the
     variant (three recommended products per message) and enqueue;
   - `--path delivery`: this driver enqueues messages it rendered itself (the
     delivery service alone, for profiling it).
   Each phase ends when every message of the campaign is in a final state.
   `*_messages_per_s`: messages at the provider / (last one at the provider −
   start); `first_message_s`: start → first message at the provider;
   `peak_rss_mb`: each worker process's VmHWM at the end of the size's phases
   (fresh processes per size, so the two sizes compare);
   `*_cpu_us_per_message`: CPU time of each group of processes in the phase per
   message at the provider (the machine is shared: "other" is not this benchmark).
4. `stages_us_per_message`: one batch of 1,000 emails and one of 500 pushes sent
   in this process (delivery.services.messages_send) against the same server,
   timed by stage: claim (UPDATE … RETURNING and the rules), the provider call
   (the SDK and the server's answer), recording the results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STATE = ROOT / "var" / "bench_campaigns.json"
PG = "postgres://postgres@127.0.0.1:5432"
SOURCE_PREFIX = "bench"


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{args.database}",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_MANIFEST": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "LOCAL_PROVIDERS": "1",
        # No receipts posted back: the figures measure sending (PUBLIC_BASE_URL is not served here).
        "LOCAL_PROVIDERS_RECEIPTS": "off",
        "CELERY_BROKER_URL": args.broker,
        "PUBLIC_BASE_URL": "https://shop.example",
        **extra,
    }
    return env


def _sql(database: str, statement: str, params: list[Any] | None = None) -> list[tuple]:
    connection = psycopg2.connect(f"{PG}/{database}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall() if cursor.description else []
    connection.close()
    return rows


# --- 1. data ------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    env = _env(args)
    env.pop("CELERY_BROKER_URL")  # training runs in the foreground
    manage = [sys.executable, str(ROOT / "manage.py")]
    _sql("postgres", f'DROP DATABASE IF EXISTS "{args.database}"')
    _sql("postgres", f'CREATE DATABASE "{args.database}"')
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    created = subprocess.run(
        [*manage, "create_project", "Campaigns bench"], env=env, check=True, capture_output=True, text=True
    )
    keys = json.loads(created.stdout)
    started = time.perf_counter()
    generated_at = datetime.now(UTC)
    subprocess.run(
        ["nice", "-n", "10", *manage, "generate_demo_data", "--project", str(keys["id"]), "--users", str(args.users),
         "--products", str(args.products), "--events", str(args.events), "--seed", "7", "--no-progress"],
        env=env, check=True,
    )  # fmt: skip
    generate_s = time.perf_counter() - started
    _sql(args.database, "ANALYZE")
    started = time.perf_counter()
    if not args.no_train:
        subprocess.run(
            ["nice", "-n", "10", *manage, "train_recommendations", "--project", str(keys["id"]), "--no-progress"],
            env={**env, "MEDIA_ROOT": str(ROOT / "var" / "bench_campaigns_media")},
            check=True,
        )
    state = {
        "id": keys["id"],
        "database": args.database,
        "users": args.users,
        "products": args.products,
        "events": args.events,
        "trained": not args.no_train,
        "generated_at": generated_at.isoformat(),
        "generate_s": round(generate_s, 1),
        "train_s": round(time.perf_counter() - started, 1),
    }
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    return state


def _state(args: argparse.Namespace) -> dict[str, Any]:
    if not args.prepare and STATE.exists():
        state = json.loads(STATE.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(state["generated_at"])
        same = all(state.get(k) == getattr(args, k) for k in ("database", "users", "events", "products"))
        if same and age.total_seconds() < 86400:
            subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=_env(args), check=True)
            return state
    _log("generating the data set (several minutes)")
    return prepare(args)


# --- 2. processes -------------------------------------------------------------------


class Stack:
    """The processes under test, each in its own process group, stopped on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: dict[str, subprocess.Popen] = {}
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(Path(self.args.log_dir) / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def server_start(stack: Stack, args: argparse.Namespace) -> None:
    env = _env(args, WEB_BODY_TIMEOUT="60", WEB_TIMEOUT="120")
    stack.start(
        "providers",
        [str(BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.py"), "localproviders.wsgi:application",
         "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.server_workers), "--threads",
         str(args.server_threads), "--worker-connections", "2000", "--keep-alive", "30", "--backlog", "2048"],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    import http.client

    while True:
        try:
            probe = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            probe.request("GET", "/healthz")
            probe.getresponse().read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the local provider server did not start") from None
            time.sleep(0.2)


def workers_start(stack: Stack, args: argparse.Namespace) -> subprocess.Popen:
    env = _env(args, CELERY_WORKER_PREFETCH_MULTIPLIER=str(args.prefetch))
    proc = stack.start(
        "workers",
        [str(BIN / "celery"), "-A", "config", "worker", "-Q", "sends", "-c", str(args.workers), "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-n", "bench-sends@%h"],
        env,
    )  # fmt: skip
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sends workers exited with {proc.returncode}")
        replies = app.control.ping(timeout=0.5) or []
        if any(next(iter(r)).startswith("bench-sends@") for r in replies):
            return proc
    raise RuntimeError("the sends workers did not become ready in 60 s")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, by pid and command name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{entry}:{name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _postmaster_pid() -> int:
    """The PostgreSQL server's main process (the parent of this driver's backend):
    its children are this server's processes; other PostgreSQL servers on the
    machine (the tests' embedded ones) are "other"."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    with open(f"/proc/{backend}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


def _cpu_groups(before: dict[str, float], after: dict[str, float], stack: Stack) -> dict[str, float]:
    """CPU seconds per group of processes between two samples."""
    postmaster = _postmaster_pid()
    server = {postmaster, *_children(postmaster)}
    groups_of = {}
    for name, proc in stack.procs.items():
        for pid in [proc.pid, *_children(proc.pid)]:
            groups_of[pid] = {"providers": "provider server", "workers": "sends workers"}[name]
    groups: dict[str, float] = {}
    for key, seconds in after.items():
        pid, name = key.split(":", 1)
        used = seconds - before.get(key, 0.0)
        if used <= 0:
            continue
        if int(pid) in groups_of:
            group = groups_of[int(pid)]
        elif int(pid) in server:
            group = "postgres (all databases of this server)"
        elif name in ("beam.smp", "erl_child_setup", "inet_gethost", "epmd"):
            group = "rabbitmq"
        elif int(pid) == os.getpid():
            group = "bench driver"
        else:
            group = "other (not this benchmark)"
        groups[group] = round(groups.get(group, 0.0) + used, 2)
    return dict(sorted(groups.items()))


# --- 3. the campaigns ---------------------------------------------------------------


def django_setup(args: argparse.Namespace) -> None:
    os.environ.update(_env(args))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def channels_configure(*, project_id: int, port: int) -> None:
    from delivery.models import DeliverySettings
    from delivery.services import channel_settings_save
    from localproviders.channel_settings import local_channel_settings, local_service_account

    base = f"http://127.0.0.1:{port}"
    settings = local_channel_settings(base_url=base, service_account=local_service_account(base_url=base))
    for channel in ("email", "push"):
        channel_settings_save(project_id=project_id, channel=channel, settings=settings[channel])
    # No caps or quiet hours: every reachable profile gets both campaigns.
    DeliverySettings.objects.filter(project_id=project_id).delete()


def audience_last_id(*, project_id: int, size: int) -> int:
    from crm.models import Profile

    ids = Profile.objects.filter(project_id=project_id).order_by("id").values_list("id", flat=True)
    return ids[size - 1] if size > 0 else 0


def _outbox_base() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM localproviders_outboxmessage")
        return cursor.fetchone()[0]


def _outbox_progress(*, provider: str, base_id: int) -> tuple[int, datetime | None, datetime | None]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), min(received_at), max(received_at) FROM localproviders_outboxmessage "
            "WHERE id > %s AND provider = %s",
            [base_id, provider],
        )
        return cursor.fetchone()


def _pending(*, project_id: int, source: str) -> int:
    from delivery.models import Message

    return Message.objects.filter(project_id=project_id, source=source, state__in=["queued", "claimed"]).count()


def _states(*, project_id: int, source: str) -> dict[str, int]:
    from django.db.models import Count

    from delivery.models import Message

    rows = Message.objects.filter(project_id=project_id, source=source).values("state", "skip_reason")
    return {
        f"{r['state']}{':' + r['skip_reason'] if r['skip_reason'] else ''}": r["n"]
        for r in rows.annotate(n=Count("id")).order_by()
    }


def _email_content(profile: Any, products: list[Any]) -> dict[str, Any]:
    """The delivery path's own rendering: what a campaign's email carries
    (three products, the profile's name), built with plain formatting."""
    cards = "".join(
        f'<tr><td><a href="{p.url}"><img src="{p.image_url}" alt="" width="120"></a></td>'
        f'<td><a href="{p.url}">{p.name}</a><br>${p.price:.2f}</td></tr>'
        for p in products
    )
    name = (profile.name or "there").split(" ")[0]
    return {
        "subject": f"{name}, picked for you",
        "html": f"<html><body><h1>Hi {name}</h1><p>New picks for you:</p><table>{cards}</table></body></html>",
        "text": f"Hi {name}, new picks for you:\n" + "\n".join(f"{p.name} ${p.price:.2f} {p.url}" for p in products),
    }


def _push_content(profile: Any, products: list[Any]) -> dict[str, Any]:
    first = products[0]
    return {
        "title": f"{first.name} is back",
        "body": "Also for you: " + ", ".join(p.name for p in products[1:]),
        "image": first.image_url,
        "deeplink": first.url,
        "data": {"product_ids": ",".join(p.product_id for p in products)},
    }


class _Card:
    __slots__ = ("image_url", "name", "price", "product_id", "url")

    def __init__(self, row: tuple) -> None:
        self.product_id, self.name, self.price, self.image_url, self.url = row[0], row[1], float(row[2]), row[3], row[4]


def delivery_path_enqueue(*, project_id: int, channel: str, source: str, last_id: int) -> int:
    """The delivery path: this process renders and enqueues the audience in
    chunks of 10,000 (messages_enqueue's maximum), each its own transaction."""
    from django.db import transaction

    from catalog.models import Product
    from crm.models import Profile
    from delivery.services import ENQUEUE_MAX, MessageIn, messages_enqueue

    cards = [
        _Card(row)
        for row in Product.objects.filter(project_id=project_id)
        .order_by("id")
        .values_list("product_id", "name", "price", "image_url", "deeplink")[:300]
    ]
    render = _email_content if channel == "email" else _push_content
    after, enqueued = 0, 0
    while True:
        profiles = list(
            Profile.objects.filter(project_id=project_id, id__gt=after, id__lte=last_id)
            .order_by("id")
            .only("id", "name")[:ENQUEUE_MAX]
        )
        if not profiles:
            return enqueued
        messages = [
            MessageIn(
                profile_id=p.pk,
                channel=channel,
                idempotency_key=f"{source}:profile:{p.pk}:{channel}",
                source=source,
                content=render(p, [cards[(p.pk * 7 + k) % len(cards)] for k in range(3)]),
            )
            for p in profiles
        ]
        with transaction.atomic():
            enqueued += messages_enqueue(project_id=project_id, messages=messages).created
        after = profiles[-1].pk


# The variants' templates: three recommended products per message (Variant.recommendations limit 3).
EMAIL_TEMPLATE = {
    "subject": "{{ user.first_name }}, picked for you",
    "html": "<html><body><h1>Hi {{ user.first_name }}</h1><p>New picks for you:</p><table>"
    "{% for p in recommendations %}<tr><td><a href='{{ p.url }}'><img src='{{ p.image_url }}' alt='' width='120'>"
    "</a></td><td><a href='{{ p.url }}'>{{ p.name }}</a><br>${{ p.price }}</td></tr>{% endfor %}</table>"
    "<p><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p></body></html>",
    "text": "Hi {{ user.first_name }}, new picks for you:\n"
    "{% for p in recommendations %}{{ p.name }} ${{ p.price }} {{ p.url }}\n{% endfor %}",
}
PUSH_TEMPLATE = {
    "title": "{{ user.first_name }}, new picks for you",
    "body": "{% for p in recommendations %}{{ p.name }}{% unless forloop.last %}, {% endunless %}{% endfor %}",
    "image": "{{ recommendations.first.image_url }}",
    "deeplink": "{{ recommendations.first.url }}",
}


def campaign_path_start(*, project_id: int, channel: str, tag: str, last_id: int, first_id: int = 0) -> tuple[str, int]:
    """The product's path: a campaign with one variant rendering three
    recommended products, started by campaigns.sending.fanout.run_start (its
    planner and chunk tasks run on the workers); returns its delivery source
    and its run's id. The audience is a segment whose members are the
    project's profiles up to `last_id`, written here in SQL: the benchmark
    measures sending, not segment computation (bench/segments.py)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import Campaign, Segment, SegmentStatus, Variant

    now = timezone.now()
    with transaction.atomic():
        segment = Segment.objects.create(
            project_id=project_id, name=f"{tag} audience", rules={"all": []}, status=SegmentStatus.READY,
            computed_at=now,
        )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO campaigns_segmentmembership (segment_id, profile_id, entered_at) "
                "SELECT %s, id, %s FROM crm_profile WHERE project_id = %s AND id > %s AND id <= %s",
                [segment.pk, now, project_id, first_id, last_id],
            )
            Segment.objects.filter(pk=segment.pk).update(member_count=cursor.rowcount)
        campaign = Campaign.objects.create(
            project_id=project_id, name=tag, channel=channel, segment=segment, status="scheduled", marketing=True,
            schedule_kind="now",
        )  # fmt: skip
        Variant.objects.create(
            campaign=campaign, name="A", share=100, content=EMAIL_TEMPLATE if channel == "email" else PUSH_TEMPLATE,
            recommendations={"limit": 3},
        )  # fmt: skip
    return campaign.source, campaign.pk


def campaign_path_run(*, campaign_id: int) -> int:
    from django.utils import timezone

    from campaigns.sending.fanout import run_start

    return run_start(campaign_id=campaign_id, occurrence="bench", planned_at=timezone.now()).pk


def _run_done(run_id: int | None) -> bool:
    if run_id is None:
        return True
    from campaigns.models import CampaignRun

    return CampaignRun.objects.filter(pk=run_id, status__in=["done", "cancelled", "failed"]).exists()


def warm_up(args: argparse.Namespace, state: dict[str, Any], channel: str) -> None:
    """A small campaign of the same channel to the last profiles (not the
    audience), so that every fresh worker process has loaded what a worker in
    service holds (the active model's related lists, the catalog, the provider
    clients) before the clock starts: 4 chunks, one per planner step's worth."""
    from crm.models import Profile

    project_id = state["id"]
    ids = Profile.objects.filter(project_id=project_id).order_by("-id").values_list("id", flat=True)
    last_id, first_id = ids[0], ids[args.warmup_profiles]
    source, campaign_id = campaign_path_start(
        project_id=project_id, channel=channel, tag=f"{SOURCE_PREFIX}:warm-up:{int(time.time())}:{channel}",
        last_id=last_id, first_id=first_id,
    )  # fmt: skip
    run_id = campaign_path_run(campaign_id=campaign_id)
    deadline = time.monotonic() + 300
    while not (_run_done(run_id) and _pending(project_id=project_id, source=source) == 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {channel} warm-up did not finish in 300 s")
        time.sleep(0.5)


def phase(args: argparse.Namespace, stack: Stack, state: dict[str, Any], channel: str, size: int) -> dict[str, Any]:
    project_id = state["id"]
    if args.path == "campaign" and args.warmup_profiles:
        warm_up(args, state, channel)
    last_id = audience_last_id(project_id=project_id, size=size)
    provider = {"email": "sendgrid", "push": "fcm"}[channel]
    tag = f"{SOURCE_PREFIX}:{int(time.time())}:{channel}:{size}"
    run_id = None
    if args.path == "campaign":
        # The campaign and its segment are set up before the clock starts.
        source, campaign_id = campaign_path_start(project_id=project_id, channel=channel, tag=tag, last_id=last_id)
    base_id = _outbox_base()
    cpu_before = _cpu_by_process()
    load_before = os.getloadavg()
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    if args.path == "delivery":
        source = tag
        enqueued = delivery_path_enqueue(project_id=project_id, channel=channel, source=source, last_id=last_id)
    else:
        run_id = campaign_path_run(campaign_id=campaign_id)
        enqueued = None
    _log(f"{channel} × {size}: started ({source})")
    stalled_since = time.perf_counter()
    seen = -1
    while True:
        time.sleep(1.0)
        count, first, last = _outbox_progress(provider=provider, base_id=base_id)
        if count != seen:
            seen, stalled_since = count, time.perf_counter()
            continue
        if _run_done(run_id) and _pending(project_id=project_id, source=source) == 0:
            break
        if time.perf_counter() - stalled_since > args.stall_seconds:
            raise RuntimeError(f"{channel}: no progress for {args.stall_seconds} s at {count} messages")
    wall = time.perf_counter() - started
    cpu = _cpu_groups(cpu_before, _cpu_by_process(), stack)
    if run_id is not None:
        from campaigns.models import CampaignRun

        enqueued = CampaignRun.objects.get(pk=run_id).counts
    span = (last - started_at).total_seconds() if last else 0.0
    return {
        "messages": count,
        "enqueued": enqueued,
        "states": _states(project_id=project_id, source=source),
        "messages_per_s": round(count / span, 1) if span else 0.0,
        "first_message_s": round((first - started_at).total_seconds(), 2) if first else None,
        "wall_s": round(wall, 1),
        "cpu_s": cpu,
        "cpu_us_per_message": {k: round(v / count * 1e6) for k, v in cpu.items()} if count else {},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


# --- 4. stages in process -----------------------------------------------------------


def stages(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    """One email batch and one push batch sent in this process, timed by stage."""
    from django.db import transaction

    from crm.models import Profile
    from delivery.models import Message
    from delivery.services import MessageIn, messages_enqueue
    from delivery.services import send as send_module

    project_id = state["id"]
    out: dict[str, Any] = {}
    for channel, size in (("email", 1000), ("push", 500)):
        source = f"{SOURCE_PREFIX}:stages:{int(time.time())}:{channel}"
        profiles = list(Profile.objects.filter(project_id=project_id).order_by("-id").only("id", "name")[:size])
        render = _email_content if channel == "email" else _push_content
        cards = [_Card(("p1", "Trail shoe", 89.0, "https://img.example/p1.jpg", "https://shop.example/p/1"))] * 3
        with transaction.atomic():
            messages_enqueue(
                project_id=project_id,
                messages=[
                    MessageIn(profile_id=p.pk, channel=channel, idempotency_key=f"{source}:{p.pk}", source=source,
                              content=render(p, cards))
                    for p in profiles
                ],
            )  # fmt: skip
        # The send tasks enqueue dispatched wait in the broker (no workers run now; purged at the next start).
        ids = list(Message.objects.filter(source=source, state="queued").order_by("id").values_list("id", flat=True))
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        summary = send_module.messages_send(message_ids=ids)
        if profiler is not None:
            import pstats

            profiler.disable()
            path = Path(args.log_dir) / f"stages-{channel}.prof.txt"
            with open(path, "w") as f:
                pstats.Stats(profiler, stream=f).sort_stats("cumulative").print_stats(60)
            _log(f"profile of the {channel} batch: {path}")
        timing = summary.timing
        sent = max(1, summary.claimed)
        out[channel] = {
            "batch": len(ids),
            "claimed": summary.claimed,
            "sent": summary.sent,
            **{f"{stage}_us": round(seconds / sent * 1e6, 1) for stage, seconds in timing.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--database", default="engage_bench_campaigns")
    parser.add_argument("--prepare", action="store_true", help="generate the data set even if a fresh one exists")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--no-train", action="store_true", help="no model: recommendations are the best rated")
    parser.add_argument("--sizes", default="100000,1000000", help="audience sizes, comma-separated")
    parser.add_argument("--channels", default="email,push")
    parser.add_argument("--path", choices=["campaign", "delivery"], default="campaign")
    parser.add_argument("--workers", type=int, default=2, help="sends worker processes (prefork)")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--server-threads", type=int, default=32)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/bench_campaigns")
    parser.add_argument("--port", type=int, default=8395)
    parser.add_argument("--stall-seconds", type=float, default=60.0)
    parser.add_argument(
        "--warmup-profiles", type=int, default=4000, help="profiles of the warm-up campaign before each phase (0: none)"
    )
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--stages-only", action="store_true", help="only the in-process stage timing")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process stage batches (log dir)")
    parser.add_argument("--log-dir", default="/tmp/bench-campaigns")
    args = parser.parse_args()
    # SIGTERM (a timeout, a stopped job) ends the run through `finally`: the stack is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    state = _state(args)
    if args.prepare_only:
        print(json.dumps(state))
        return
    if args.broker.startswith("amqp"):
        vhost = args.broker.rsplit("/", 1)[1] or "/"
        for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", *argv], capture_output=True, check=False)
    django_setup(args)
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare(queue="sends", durable=True, auto_delete=False)
        conn.default_channel.queue_purge("sends")
    channels_configure(project_id=state["id"], port=args.port)
    stack = Stack(args)
    result: dict[str, Any] = {
        "path": args.path,
        "users": state["users"],
        "products": state["products"],
        "trained": state.get("trained"),
        "workers": args.workers,
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
        "runs": {},
    }
    try:
        server_start(stack, args)
        for size in [] if args.stages_only else [int(s) for s in args.sizes.split(",")]:
            worker = workers_start(stack, args)
            run: dict[str, Any] = {}
            for channel in args.channels.split(","):
                run[channel] = phase(args, stack, state, channel, size)
                _log(f"{channel} × {size}: {json.dumps(run[channel])}")
            run["peak_rss_mb"] = {str(pid): _peak_rss_mb(pid) for pid in [worker.pid, *_children(worker.pid)]}
            stack.stop("workers")
            result["runs"][str(size)] = run
        if not args.skip_stages:
            result["stages_us_per_message"] = stages(args, state)
    finally:
        stack.stop_all()
    runs = result["runs"]
    largest = runs[max(runs, key=int)] if runs else {}
    result.update(
        {
            "email_messages_per_s": largest.get("email", {}).get("messages_per_s"),
            "push_messages_per_s": largest.get("push", {}).get("messages_per_s"),
            "first_message_s": max(
                (r[c]["first_message_s"] or 0.0 for r in runs.values() for c in ("email", "push") if c in r),
                default=None,
            ),
            "peak_rss_mb": {size: max(r["peak_rss_mb"].values()) for size, r in runs.items()},
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
