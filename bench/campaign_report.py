"""Campaign report benchmark: the report of a campaign of 1,000,000 messages,
read from its counters. Prints one JSON object on its last line.

    .venv/bin/python bench/campaign_report.py [--messages 1000000] [--days 14] [--products 500]
        [--repeat 20] [--database engage_bench_campaign_report]

1. A fresh database (dropped and created), migrated; one project with 500
   active catalog products, a system control group of 5 %; one email campaign
   with three variants (34 / 33 / 33) and a 10 % control group.
2. The counters arise the way they do in production: the outcomes listener
   (campaigns.results.counters.outcomes_count_hook) is fed generated outcomes
   in batches of 1,000 messages, spread over 14 days: created for every
   message, skipped control / system_control for the held-out ones, sent
   (three products each) or failed for the others, then delivered, opened and
   clicked (some on a product) as separate calls, as the receipts arrive.
   Conversions and revenue go through the same upserts the attribution hook
   uses (counters.stats_add / product_stats_add), per batch; new product views
   as CampaignNewView rows. Then VACUUM ANALYZE. `listener_ms_per_call`: the
   time inside the listener per call (what the send path pays per batch).
3. `campaign_report` timed: `cold_ms` on a fresh database connection (its first
   call), then --repeat warm calls; `report_ms` {p50, max} over them all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
PG = "postgres://postgres@127.0.0.1:5432"


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _env(database: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{database}",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_MANIFEST": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    return env


def _sql(database: str, statement: str) -> None:
    connection = psycopg2.connect(f"{PG}/{database}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def prepare(database: str) -> int:
    manage = [sys.executable, str(ROOT / "manage.py")]
    _sql("postgres", f'DROP DATABASE IF EXISTS "{database}"')
    _sql("postgres", f'CREATE DATABASE "{database}"')
    subprocess.run([*manage, "migrate", "-v0"], env=_env(database), check=True)
    created = subprocess.run(
        [*manage, "create_project", "Campaign report bench"],
        env=_env(database),
        check=True,
        capture_output=True,
        text=True,
    )
    return int(json.loads(created.stdout)["id"])


def generate(project_id: int, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from django.db import transaction

    from campaigns.models import Campaign, CampaignNewView, CampaignSettings, CampaignStatus, Variant
    from campaigns.results.counters import outcomes_count_hook, product_stats_add, stats_add
    from catalog.models import Product
    from delivery.outcomes import Outcome

    rng = random.Random(11)
    Product.objects.bulk_create(
        [Product(project_id=project_id, product_id=f"p{i}", name=f"Product {i}") for i in range(args.products)]
    )
    CampaignSettings.objects.create(project_id=project_id, system_control_percent=5)
    campaign = Campaign.objects.create(
        project_id=project_id,
        name="Report bench",
        channel="email",
        control_percent=10,
        goal_event="Order Completed",
        status=CampaignStatus.COMPLETED,
    )
    variants = [
        Variant.objects.create(campaign=campaign, name=n, share=s) for n, s in (("A", 34), ("B", 33), ("C", 33))
    ]
    labels = [f"variant:{v.pk}" for v in variants]
    # Per variant: open, click, conversion rates (so the uplift has something to find).
    rates = {labels[0]: (0.30, 0.060, 0.020), labels[1]: (0.28, 0.050, 0.017), labels[2]: (0.25, 0.045, 0.015)}
    products = [f"p{i}" for i in range(args.products)]
    source = campaign.source
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    started = time.perf_counter()
    outcomes = 0
    listener_s = 0.0  # inside outcomes_count_hook only (the send path's added cost)
    calls_made = 0
    per_day = args.messages // args.days
    message_id = 0
    for batch_start in range(0, args.messages, 1000):
        day = min(batch_start // per_day, args.days - 1)
        at = start + timedelta(days=day, seconds=batch_start % per_day)
        n = min(1000, args.messages - batch_start)
        rows = []
        for _ in range(n):
            message_id += 1
            roll = rng.random()
            if roll < 0.05:
                label = "system_control"
            elif roll < 0.05 + 0.095:
                label = "control"
            else:
                label = labels[min(2, int((roll - 0.145) / 0.855 * 100) // 34)]
            rows.append((message_id, label, tuple(rng.sample(products, 3))))

        def outcome(mid: int, label: str, kind: str, when: datetime, **fields: Any) -> Outcome:
            return Outcome(mid, project_id, mid, "email", source, label, kind, when, **fields)

        calls: list[list[Outcome]] = [[], [], [], [], []]
        conv_stats: dict[tuple, list] = {}
        conv_products: dict[tuple, list] = {}
        for mid, label, items in rows:
            calls[0].append(outcome(mid, label, "created", at))
            if label in ("control", "system_control"):
                calls[0].append(outcome(mid, label, "skipped", at, reason=label))
                converts = rng.random() < 0.012
            else:
                if rng.random() < 0.01:
                    calls[1].append(outcome(mid, label, "failed", at, reason="provider_rejected"))
                    continue
                calls[1].append(outcome(mid, label, "sent", at, items=items))
                later = at + timedelta(minutes=30)
                if rng.random() < 0.96:
                    calls[2].append(outcome(mid, label, "delivered", later))
                open_rate, click_rate, conversion_rate = rates[label]
                if rng.random() < open_rate:
                    calls[3].append(outcome(mid, label, "opened", later))
                if rng.random() < click_rate:
                    slot = rng.randrange(3)
                    calls[4].append(
                        outcome(mid, label, "clicked", later, item=items[slot], slot=slot + 1, first_click=True)
                    )
                converts = rng.random() < conversion_rate
            if converts:
                amount = round(rng.uniform(5, 120), 2)
                iso = (at + timedelta(hours=5)).date().isoformat()
                for metric in ("converted", "revenue"):
                    entry = conv_stats.setdefault((campaign.pk, project_id, label, iso, metric), [0, 0.0])
                    entry[0] += 1
                    entry[1] += amount if metric == "revenue" else 0
                if label not in ("control", "system_control") and rng.random() < 0.5:
                    slot = rng.randrange(3)
                    entry = conv_products.setdefault((campaign.pk, project_id, label, items[slot], slot + 1), [0, 0.0])
                    entry[0] += 1
                    entry[1] += amount
        for call in calls:
            if call:
                with transaction.atomic():
                    before = time.perf_counter()
                    outcomes_count_hook(call)
                    listener_s += time.perf_counter() - before
                calls_made += 1
                outcomes += len(call)
        with transaction.atomic():
            stats_add(rows=[(*k, c, f"{a:.2f}") for k, (c, a) in sorted(conv_stats.items())])
            product_stats_add(rows=[(*k, 0, 0, c, f"{a:.2f}") for k, (c, a) in sorted(conv_products.items())])
    generate_s = time.perf_counter() - started
    CampaignNewView.objects.bulk_create(
        [
            CampaignNewView(campaign=campaign, group=group, product_id=p)
            for group in [*labels, "control", "system_control"]
            for p in rng.sample(products, 200)
        ]
    )
    return campaign.pk, {
        "outcomes": outcomes,
        "generate_s": round(generate_s, 1),
        "listener_us_per_outcome": round(listener_s / outcomes * 1e6, 2),
        "listener_calls": calls_made,
        "listener_ms_per_call": round(listener_s / calls_made * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database", default="engage_bench_campaign_report")
    args = parser.parse_args()

    _log(f"preparing database {args.database}")
    project_id = prepare(args.database)
    os.environ.update(_env(args.database))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from campaigns.models import Campaign, CampaignProductStat, CampaignStat
    from campaigns.results.report import campaign_report

    _log(f"feeding the listener the outcomes of {args.messages:,} messages")
    campaign_id, generated = generate(project_id, args)
    _sql(args.database, "VACUUM ANALYZE")

    connection.close()  # cold: a fresh connection, the first report of this process's connection
    campaign = Campaign.objects.get(pk=campaign_id)
    started = time.perf_counter()
    report = campaign_report(campaign=campaign)
    cold_ms = (time.perf_counter() - started) * 1000
    warm = []
    for _ in range(args.repeat):
        campaign = Campaign.objects.get(pk=campaign_id)
        started = time.perf_counter()
        campaign_report(campaign=campaign)
        warm.append((time.perf_counter() - started) * 1000)
    every = [cold_ms, *warm]
    result = {
        "messages": args.messages,
        **generated,
        "stat_rows": CampaignStat.objects.filter(campaign_id=campaign_id).count(),
        "product_rows": CampaignProductStat.objects.filter(campaign_id=campaign_id).count(),
        "sent": report.total.sent,
        "converted": report.total.converted + sum(g.converted for g in report.groups if not g.group.startswith("v")),
        "cold_ms": round(cold_ms, 1),
        "warm_ms": {"p50": round(statistics.median(warm), 1), "max": round(max(warm), 1)},
        "report_ms": {"p50": round(statistics.median(every), 1), "max": round(max(every), 1)},
        "repeat": args.repeat,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
