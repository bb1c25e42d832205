"""A realistic synthetic store for demos and benchmarks.

The world: a catalog in a two-level taxonomy, products grouped into small
"clusters" of items that go together (a phone, its case, its charger), with
long-tailed (Zipf) popularity. Users keep to one to three favourite categories;
their history is a series of sessions, each focused on one cluster, made of
Segment e-commerce events: `Product Viewed`, some `Product Added`, and sometimes
an `Order Completed` of what was added. So the data has the signal a
recommender must find: products viewed together in sessions.

Generation is streamed in chunks of users: each chunk's profiles, devices and
events are written with COPY (PostgreSQL) and dropped, so memory stays flat at
any size (bench/demo_data.py measures 1M users / 5M events).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from crm.bulk import copy_rows
from crm.models import Device, Event, Profile

TAXONOMY: dict[str, dict[str, list[str]]] = {
    "Electronics": {
        "Phones": ["Smartphone", "Phone Case", "Charger", "Screen Protector"],
        "Laptops": ["Laptop", "Laptop Sleeve", "USB-C Hub", "Wireless Mouse"],
        "Audio": ["Headphones", "Earbuds", "Bluetooth Speaker", "Soundbar"],
        "Cameras": ["Mirrorless Camera", "Lens", "Tripod", "Memory Card"],
    },
    "Fashion": {
        "Shoes": ["Sneakers", "Running Shoes", "Boots", "Sandals"],
        "Clothing": ["T-Shirt", "Jeans", "Hoodie", "Jacket"],
        "Accessories": ["Backpack", "Wallet", "Sunglasses", "Watch"],
    },
    "Home": {
        "Kitchen": ["Chef Knife", "Frying Pan", "Coffee Grinder", "Cutting Board"],
        "Bedding": ["Duvet", "Pillow", "Bed Sheet Set", "Throw Blanket"],
        "Lighting": ["Desk Lamp", "Floor Lamp", "LED Strip", "Smart Bulb"],
    },
    "Beauty": {
        "Skincare": ["Moisturiser", "Cleanser", "Serum", "Sunscreen"],
        "Fragrance": ["Eau de Parfum", "Body Mist", "Cologne", "Scented Candle"],
    },
    "Sports": {
        "Fitness": ["Yoga Mat", "Dumbbell Set", "Resistance Bands", "Foam Roller"],
        "Outdoor": ["Tent", "Sleeping Bag", "Hiking Poles", "Water Bottle"],
        "Cycling": ["Bike Helmet", "Bike Light", "Cycling Gloves", "Bike Lock"],
    },
    "Books": {
        "Fiction": ["Novel", "Thriller", "Fantasy Saga", "Short Stories"],
        "Cooking": ["Cookbook", "Baking Guide", "Vegan Recipes", "Grill Handbook"],
    },
    "Grocery": {
        "Coffee & Tea": ["Espresso Beans", "Green Tea", "Cold Brew", "Chai Blend"],
        "Snacks": ["Granola", "Dark Chocolate", "Trail Mix", "Rice Crackers"],
    },
}
BASE_PRICE = {
    "Electronics": 180.0,
    "Fashion": 60.0,
    "Home": 45.0,
    "Beauty": 30.0,
    "Sports": 40.0,
    "Books": 15.0,
    "Grocery": 8.0,
}
BRANDS = [
    "Acme",
    "Nordic",
    "Lumen",
    "Vertex",
    "Koa",
    "Harbor",
    "Pixel",
    "Summit",
    "Oak & Co",
    "Nimbus",
    "Tidal",
    "Juniper",
]
ADJECTIVES = [
    "Classic",
    "Pro",
    "Lite",
    "Ultra",
    "Eco",
    "Smart",
    "Compact",
    "Deluxe",
    "Everyday",
    "Travel",
    "Max",
    "Mini",
]
FIRST_NAMES = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Lucas",
    "Mia",
    "Leo",
    "Sofia",
    "Arjun",
    "Yuki",
    "Amara",
    "Mateo",
    "Chloe",
    "Ravi",
    "Zara",
    "Ethan",
    "Ines",
    "Kofi",
    "Lena",
]
LAST_NAMES = [
    "Smith",
    "Garcia",
    "Müller",
    "Rossi",
    "Kim",
    "Patel",
    "Nguyen",
    "Silva",
    "Novak",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Jensen",
    "Cohen",
    "Haddad",
    "Lopez",
]
PLACES = [
    ("GB", "London", "en-GB", "Europe/London"),
    ("GB", "Manchester", "en-GB", "Europe/London"),
    ("US", "New York", "en-US", "America/New_York"),
    ("US", "San Francisco", "en-US", "America/Los_Angeles"),
    ("DE", "Berlin", "de-DE", "Europe/Berlin"),
    ("FR", "Paris", "fr-FR", "Europe/Paris"),
    ("IN", "Bengaluru", "en-IN", "Asia/Kolkata"),
    ("BR", "São Paulo", "pt-BR", "America/Sao_Paulo"),
    ("JP", "Tokyo", "ja-JP", "Asia/Tokyo"),
    ("AU", "Sydney", "en-AU", "Australia/Sydney"),
]
CLUSTER_SIZE = 8


@dataclass
class DemoProduct:
    product_id: str
    name: str
    categories: list[str]
    price: float
    rating: float
    in_stock: bool
    description: str
    image_url: str
    deeplink: str
    brand: str
    popularity: float


@dataclass
class DemoCatalog:
    products: list[DemoProduct]
    # top category -> (cluster cumulative weights, clusters as lists of product
    # indexes, each with its own cumulative weights)
    by_top: dict[str, tuple[list[float], list[tuple[list[int], list[float]]]]] = field(default_factory=dict)
    top_weights: dict[str, float] = field(default_factory=dict)


def demo_catalog_build(*, products: int, seed: int) -> DemoCatalog:
    """`products` products with attributes and Zipf popularity, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    subs = [(top, sub) for top, subs_ in TAXONOMY.items() for sub in subs_]
    sub_of = rng.integers(0, len(subs), size=products)
    # Zipf-like popularity on a random ranking: few heads, a long tail.
    ranks = rng.permutation(products) + 1
    popularity = 1.0 / np.power(ranks, 1.05)
    prices = rng.lognormal(mean=0.0, sigma=0.5, size=products)
    ratings = np.clip(rng.normal(4.1, 0.5, size=products), 1.0, 5.0)
    in_stock = rng.random(products) > 0.07
    brand_idx = rng.integers(0, len(BRANDS), size=products)
    adj_idx = rng.integers(0, len(ADJECTIVES), size=products)
    noun_idx = rng.integers(0, 4, size=products)
    out: list[DemoProduct] = []
    for i in range(products):
        top, sub = subs[int(sub_of[i])]
        noun = TAXONOMY[top][sub][int(noun_idx[i])]
        brand = BRANDS[int(brand_idx[i])]
        name = f"{brand} {ADJECTIVES[int(adj_idx[i])]} {noun}"
        pid = f"SKU-{i + 1:06d}"
        out.append(
            DemoProduct(
                product_id=pid,
                name=name,
                categories=[top, sub],
                price=round(float(BASE_PRICE[top] * prices[i]), 2),
                rating=round(float(ratings[i]), 1),
                in_stock=bool(in_stock[i]),
                description=f"{name}: a {noun.lower()} by {brand} for {sub.lower()} lovers.",
                image_url=f"https://cdn.example.com/products/{pid}.jpg",
                deeplink=f"demostore://product/{pid}",
                brand=brand,
                popularity=float(popularity[i]),
            )
        )
    catalog = DemoCatalog(products=out)
    # Clusters: products of one sub-category, CLUSTER_SIZE at a time.
    by_sub: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(out):
        by_sub.setdefault((p.categories[0], p.categories[1]), []).append(i)
    per_top: dict[str, list[list[int]]] = {}
    for (top, _sub), idxs in by_sub.items():
        for start in range(0, len(idxs), CLUSTER_SIZE):
            per_top.setdefault(top, []).append(idxs[start : start + CLUSTER_SIZE])
    for top, clusters in per_top.items():
        cluster_w = [sum(out[i].popularity for i in c) for c in clusters]
        members = [(c, list(itertools.accumulate(out[i].popularity for i in c))) for c in clusters]
        catalog.by_top[top] = (list(itertools.accumulate(cluster_w)), members)
        catalog.top_weights[top] = sum(cluster_w)
    return catalog


@dataclass
class DemoProgress:
    users: int = 0
    events: int = 0


def _pick(rnd: random.Random, cum: list[float]) -> int:
    return bisect.bisect_right(cum, rnd.random() * cum[-1]) if len(cum) > 1 else 0


def demo_data_write(
    *,
    project_id: int,
    catalog: DemoCatalog,
    users: int,
    events: int,
    seed: int,
    days: int = 90,
    end: datetime | None = None,
    chunk_users: int = 20_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> DemoProgress:
    """Write `users` profiles with devices and about `events` events for them.

    User ids continue after the project's existing profiles, so running twice
    adds a second cohort instead of colliding. Calls `on_progress(users, events)`
    after each chunk.
    """
    end = end or datetime.now(UTC)
    start = end - timedelta(days=days)
    offset = Profile.objects.filter(project_id=project_id).count()
    rng = np.random.default_rng(seed + offset)
    # Heavy-tailed activity: most users do little, a few do a lot.
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=users)
    per_user = rng.multinomial(events, activity / activity.sum()) if users else np.array([])
    tops = list(catalog.by_top)
    top_cum = list(itertools.accumulate(catalog.top_weights[t] for t in tops))
    progress = DemoProgress()
    for chunk_start in range(0, users, chunk_users):
        chunk_end = min(users, chunk_start + chunk_users)
        rnd = random.Random(f"{seed}-{offset}-{chunk_start}")
        profiles, devices, chunk_events = _demo_chunk(
            rnd=rnd,
            catalog=catalog,
            tops=tops,
            top_cum=top_cum,
            first_index=offset + chunk_start,
            counts=per_user[chunk_start:chunk_end],
            start=start,
            end=end,
            project_id=project_id,
        )
        copy_rows(Profile, _PROFILE_COLUMNS, profiles)
        user_ids = [row[1] for row in profiles]
        ids = dict(Profile.objects.filter(project_id=project_id, user_id__in=user_ids).values_list("user_id", "pk"))
        copy_rows(Device, _DEVICE_COLUMNS, ((project_id, ids[row[0]], *row[1:]) for row in devices))
        copy_rows(
            Event,
            _EVENT_COLUMNS,
            ((project_id, ids[row[0]], *row[1:]) for row in chunk_events),
        )
        progress.users += chunk_end - chunk_start
        progress.events += len(chunk_events)
        if on_progress:
            on_progress(chunk_end - chunk_start, len(chunk_events))
    return progress


_PROFILE_COLUMNS = [
    "project_id", "user_id", "traits", "email", "phone", "name", "gender", "birth_date", "locale",
    "country", "city", "timezone", "first_seen", "last_seen", "recent_viewed", "recent_purchased",
    "email_subscribed", "push_subscribed", "sms_subscribed", "created_at", "updated_at",
]  # fmt: skip
_DEVICE_COLUMNS = [
    "project_id", "profile_id", "device_id", "platform", "push_token", "app_version", "os_name",
    "os_version", "last_seen", "created_at",
]  # fmt: skip
_EVENT_COLUMNS = [
    "project_id", "profile_id", "type", "name", "properties", "context", "timestamp", "received_at",
    "message_id",
]  # fmt: skip


def _demo_chunk(
    *,
    rnd: random.Random,
    catalog: DemoCatalog,
    tops: list[str],
    top_cum: list[float],
    first_index: int,
    counts: np.ndarray,
    start: datetime,
    end: datetime,
    project_id: int,
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    products = catalog.products
    span = (end - start).total_seconds()
    now = datetime.now(UTC)
    profiles: list[tuple] = []
    devices: list[tuple] = []
    events: list[tuple] = []
    for k, count in enumerate(counts.tolist()):
        index = first_index + k
        user_id = f"user-{index:07d}"
        first = rnd.choice(FIRST_NAMES)
        last = rnd.choice(LAST_NAMES)
        country, city, locale, tz = rnd.choice(PLACES)
        favourites = list({tops[_pick(rnd, top_cum)] for _ in range(rnd.randint(1, 3))})
        platform = rnd.choices(["android", "ios", "web"], weights=[6, 3, 1])[0]
        # Sessions spread over the user's lifetime in the window.
        born = start.timestamp() + rnd.random() * span * 0.8
        t = born
        last_start = end.timestamp() - 3600
        mean_gap = max(60.0, (last_start - born) / max(1.0, count / 3.5))
        viewed: list[str] = []
        purchased: list[str] = []
        remaining = count
        session_no = 0
        while remaining > 0:
            session_no += 1
            # Gaps sized so the user's sessions fit the window; time never goes back.
            t = max(t, min(t + rnd.expovariate(1 / mean_gap), last_start))
            top = rnd.choice(favourites)
            cluster_cum, clusters = catalog.by_top[top]
            members, member_cum = clusters[_pick(rnd, cluster_cum)]
            added: list[int] = []
            for _ in range(rnd.randint(1, 6)):
                if remaining <= 0:
                    break
                idx = members[_pick(rnd, member_cum)]
                if rnd.random() < 0.1:  # a detour outside the cluster
                    other_members, other_cum = clusters[_pick(rnd, cluster_cum)]
                    idx = other_members[_pick(rnd, other_cum)]
                t += rnd.uniform(5, 90)
                p = products[idx]
                events.append(_event(user_id, "Product Viewed", p, t, f"{index}-{len(events)}"))
                viewed.append(p.product_id)
                remaining -= 1
                if remaining > 0 and rnd.random() < 0.15:
                    t += rnd.uniform(2, 30)
                    events.append(_event(user_id, "Product Added", p, t, f"{index}-{len(events)}"))
                    added.append(idx)
                    remaining -= 1
            if added and remaining > 0 and rnd.random() < 0.5:
                t += rnd.uniform(30, 300)
                order = [products[i] for i in dict.fromkeys(added)]
                props = {
                    "order_id": f"o-{index}-{session_no}",
                    "revenue": round(sum(p.price for p in order), 2),
                    "currency": "USD",
                    "products": [
                        {"product_id": p.product_id, "price": p.price, "quantity": 1, "category": p.categories[0]}
                        for p in order
                    ],
                }
                ts = datetime.fromtimestamp(t, UTC)
                events.append((user_id, "track", "Order Completed", props, {}, ts, ts, f"demo-{index}-{len(events)}"))
                purchased.extend(p.product_id for p in order)
                remaining -= 1
        last_seen = datetime.fromtimestamp(max(t, born), UTC)
        first_seen = datetime.fromtimestamp(born, UTC)
        traits = {"plan": rnd.choice(["free", "free", "plus", "premium"]), "favourite_category": favourites[0]}
        profiles.append(
            (
                project_id,
                user_id,
                traits,
                f"{first}.{last}{index}@example.com".lower(),
                f"+1555{index % 10_000_000:07d}",
                f"{first} {last}",
                rnd.choice(["female", "male", "female", "male", "other"]),
                date(1955 + rnd.randint(0, 50), rnd.randint(1, 12), rnd.randint(1, 28)),
                locale,
                country,
                city,
                tz,
                first_seen,
                last_seen,
                _newest_unique(viewed),
                _newest_unique(purchased),
                rnd.random() < 0.7,
                platform != "web" and rnd.random() < 0.8,
                rnd.random() < 0.3,
                now,
                now,
            )
        )
        os_name = {"android": "Android", "ios": "iOS", "web": "Web"}[platform]
        devices.append(
            (
                user_id,
                f"dev-{index:07d}",
                platform,
                "" if platform == "web" else f"tok{rnd.getrandbits(128):032x}",
                rnd.choice(["3.4.0", "3.5.1", "3.6.0"]),
                os_name,
                {"android": "14", "ios": "17.5", "web": ""}[platform],
                last_seen,
                now,
            )
        )
    return profiles, devices, events


def _event(user_id: str, name: str, p: DemoProduct, t: float, suffix: str) -> tuple:
    ts = datetime.fromtimestamp(t, UTC)
    props = {"product_id": p.product_id, "name": p.name, "category": p.categories[0], "price": p.price}
    return (user_id, "track", name, props, {}, ts, ts, f"demo-{suffix}")


def _newest_unique(items: list[str], limit: int = 10) -> list[str]:
    return list(dict.fromkeys(reversed(items)))[:limit]
