"""A hand-made catalog and model version whose answers can be worked out by hand."""

from __future__ import annotations

from decimal import Decimal

from catalog.models import Product
from crm.services import ProfileActivity, profile_upsert, profiles_apply_activity
from recommendations.models import ModelVersion, RelatedProduct, TrendingProduct, VersionStatus
from recommendations.serving import serving_cache_clear

# product id -> (categories, price, in stock, rating, properties)
CATALOG = {
    "p1": (["Shoes", "Running"], "90", True, 4.5, {"color": "red"}),
    "p2": (["Shoes", "Running"], "120", True, 4.0, {"color": "blue"}),
    "p3": (["Shoes", "Trail"], "150", True, 3.0, {"color": "red"}),
    "p4": (["Shoes", "Trail"], "60", False, 4.9, {"color": "red"}),
    "p5": (["Socks"], "10", True, 4.2, {"color": "white", "size": 42}),
    "p6": (["Socks"], "12", True, 3.5, {"color": "black"}),
    "p7": (["Hats"], "25", True, 2.0, {}),
    "p8": (["Hats"], "30", True, None, {}),
}
# source -> [(related, score)] in rank order
RELATED = {
    "p1": [("p2", 0.5), ("p3", 0.3), ("p5", 0.1)],
    "p2": [("p1", 0.4), ("p4", 0.35), ("p6", 0.2)],
    "p3": [("p4", 0.6), ("p1", 0.2)],
    "p5": [("p6", 0.7)],
}
TRENDING = {"": ["p7", "p5", "p1", "p6"], "Socks": ["p6", "p5"], "Shoes": ["p3", "p1", "p2"]}


def catalog_write(project_id: int) -> None:
    Product.objects.bulk_create(
        [
            Product(
                project_id=project_id,
                product_id=pid,
                name=f"Product {pid}",
                categories=cats,
                price=Decimal(price),
                in_stock=stock,
                rating=rating,
                properties=props,
                image_url=f"https://img.example/{pid}.jpg",
                deeplink=f"shop://p/{pid}",
            )
            for pid, (cats, price, stock, rating, props) in CATALOG.items()
        ]
    )


def version_write(project_id: int, related: dict | None = None, trending: dict | None = None) -> ModelVersion:
    ModelVersion.objects.filter(project_id=project_id, status=VersionStatus.ACTIVE).update(status=VersionStatus.RETIRED)
    version = ModelVersion.objects.create(project_id=project_id, status=VersionStatus.ACTIVE)
    RelatedProduct.objects.bulk_create(
        [
            RelatedProduct(
                project_id=project_id,
                model_version=version,
                product_id=src,
                related_product_id=dst,
                rank=i + 1,
                score=score,
            )
            for src, items in (related or RELATED).items()
            for i, (dst, score) in enumerate(items)
        ]
    )
    TrendingProduct.objects.bulk_create(
        [
            TrendingProduct(
                project_id=project_id,
                model_version=version,
                category=cat,
                product_id=pid,
                rank=i + 1,
                score=1.0 / (i + 1),
            )
            for cat, items in (trending or TRENDING).items()
            for i, pid in enumerate(items)
        ]
    )
    serving_cache_clear()
    return version


def user_write(project_id: int, user_id: str, viewed: list[str] = (), purchased: list[str] = ()) -> int:
    profile = profile_upsert(project_id=project_id, user_id=user_id)
    # Arguments are oldest first: the last one given is the newest.
    profiles_apply_activity(
        project_id=project_id, activities={profile.pk: ProfileActivity(viewed=list(viewed), purchased=list(purchased))}
    )
    return profile.pk
