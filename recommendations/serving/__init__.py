"""Real-time serving: a user's next recommendations, similar products, trending.

One request costs, once the process is warm, one small query (user_state).
Everything else comes from per-process memory that cannot be stale:
- picker.py: how an answer is built (related products of recent items,
  trending, the catalog's best rated; exclusions and filters);
- user_state.py: the request's one query (recent items, active version,
  catalog token);
- lists.py: related and trending lists kept per immutable model version,
  the related lists preloaded in the background, the caches' clearing;
- catalog.mirror: catalog rows kept per catalog token, and the filters on them.
"""

from catalog.mirror import catalog_preload
from recommendations.serving.lists import related_lists, related_preload, serving_cache_clear
from recommendations.serving.picker import (
    Served,
    ServedProduct,
    ServeFilters,
    recommendations_for_state,
    recommendations_for_user,
    similar_products,
    trending_products_served,
)
from recommendations.serving.user_state import UserState, project_state, user_state

__all__ = [
    "ServeFilters",
    "Served",
    "ServedProduct",
    "UserState",
    "catalog_preload",
    "project_state",
    "recommendations_for_state",
    "recommendations_for_user",
    "related_lists",
    "related_preload",
    "serving_cache_clear",
    "similar_products",
    "trending_products_served",
    "user_state",
]
