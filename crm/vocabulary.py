"""The one vocabulary of events: the Segment e-commerce names the platform reads.

Ingestion (recent items), recommendation training (interactions) and
recommendation tracking (clicks, conversions) all read events by these names,
and each applies a project's own names mapped onto them
(`crm.models.EventNameMapping`, read with `crm.selectors.event_name_mappings`):
a project that sends "Viewed Item" and maps it to `Product Viewed` gets recent
items, training data and click attribution alike. Stored events keep the name
they were sent with; the mapping is applied when they are read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from django.db import models


class CanonicalEvent(models.TextChoices):
    """Segment e-commerce spec names (V2) that the platform gives a meaning to."""

    PRODUCT_VIEWED = "Product Viewed"
    PRODUCT_CLICKED = "Product Clicked"
    PRODUCT_ADDED = "Product Added"
    ORDER_COMPLETED = "Order Completed"


# Events whose `properties.product_id` goes to the front of a profile's recent_viewed.
RECENT_VIEW_EVENTS = frozenset({CanonicalEvent.PRODUCT_VIEWED.value, CanonicalEvent.PRODUCT_ADDED.value})
# Events whose `properties.products[].product_id` go to recent_purchased; each is an order.
ORDER_EVENTS = frozenset({CanonicalEvent.ORDER_COMPLETED.value})
# Events that count as a click on a recommended product (tracking).
CLICK_EVENTS = frozenset({CanonicalEvent.PRODUCT_VIEWED.value, CanonicalEvent.PRODUCT_CLICKED.value})

# Interactions of recommendation training, by strength (1 view, 2 add to cart, 3 purchase).
VIEW, CART, PURCHASE = 1, 2, 3
INTERACTION_KINDS = {
    CanonicalEvent.PRODUCT_VIEWED.value: VIEW,
    CanonicalEvent.PRODUCT_ADDED.value: CART,
    CanonicalEvent.ORDER_COMPLETED.value: PURCHASE,
}


def canonical_name(name: str, mappings: Mapping[str, str]) -> str:
    """The canonical name of a stored event name under a project's mappings."""
    return mappings.get(name, name)


def stored_names(canonical: Collection[str], mappings: Mapping[str, str]) -> dict[str, str]:
    """Every stored event name that means one of `canonical` under the
    mappings, with the canonical name it means: the canonical names themselves
    and the project's names mapped onto them. For queries on the events table,
    which holds names as they were sent."""
    candidates = {*canonical, *mappings}
    return {name: meaning for name in candidates if (meaning := canonical_name(name, mappings)) in canonical}
