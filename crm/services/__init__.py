"""Writes to the data store. Every function is keyword-only and scoped to a project.

One module per concern, re-exported here so that callers import from
crm.services: projects (tenancy, keys, memberships), identity (which profile a
message is about; merges), profiles (traits, recent items, activity,
subscriptions), devices, events, and the ingest writers' per-process memory
(write_caches).
"""

from crm.services.devices import (
    DEVICE_LAST_SEEN_STEP,
    DeviceIn,
    devices_clear_push_tokens,
    devices_upsert,
    platform_from,
)
from crm.services.events import events_insert_new
from crm.services.identity import IdentityIn, profile_merge, profiles_resolve
from crm.services.profiles import (
    LAST_SEEN_STEP,
    ProfileActivity,
    ProfilesGone,
    demographics_from_traits,
    profile_set_subscription,
    profile_upsert,
    profiles_apply_activity,
)
from crm.services.projects import ProjectKeys, membership_add, project_create, project_rotate_keys
from crm.services.write_caches import WRITE_CACHE_MAX, write_caches_clear

__all__ = [
    "DEVICE_LAST_SEEN_STEP",
    "LAST_SEEN_STEP",
    "WRITE_CACHE_MAX",
    "DeviceIn",
    "IdentityIn",
    "ProfileActivity",
    "ProfilesGone",
    "ProjectKeys",
    "demographics_from_traits",
    "devices_clear_push_tokens",
    "devices_upsert",
    "events_insert_new",
    "membership_add",
    "platform_from",
    "profile_merge",
    "profile_set_subscription",
    "profile_upsert",
    "profiles_apply_activity",
    "profiles_resolve",
    "project_create",
    "project_rotate_keys",
    "write_caches_clear",
]
