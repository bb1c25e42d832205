"""Recommendation tracking: what was served, what was clicked and bought.

Split by the process each part runs in:
- impressions.py (web processes): every served list, buffered and written in bulk;
- attribution.py (ingest workers): clicks and conversions from stored events,
  as ingestion's stored-events hook;
- daily_stats.py (both): the per-day statistics the console shows.
"""

from recommendations.tracking.attribution import TrackedEvent, engagements_attribute, events_stored_hook
from recommendations.tracking.impressions import served_flush, served_record, tracking_cache_clear

__all__ = [
    "TrackedEvent",
    "engagements_attribute",
    "events_stored_hook",
    "served_flush",
    "served_record",
    "tracking_cache_clear",
]
