"""Tenancy: projects, their keys, and the marketers' memberships."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.utils import timezone

from crm.models import Membership, Project, key_digest
from crm.selectors import project_key_cache_clear


@dataclass(frozen=True)
class ProjectKeys:
    """The raw keys, returned once at creation or rotation and never stored."""

    write_key: str
    secret_key: str | None = None


def _new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _set_write_key(project: Project) -> str:
    raw = _new_key("wk_")
    project.write_key_prefix = raw[:10]
    project.write_key_hash = key_digest(raw)
    return raw


def _set_secret_key(project: Project) -> str:
    raw = _new_key("sk_")
    project.secret_key_prefix = raw[:10]
    project.secret_key_hash = key_digest(raw)
    return raw


def project_create(*, name: str, timezone_name: str = "UTC") -> tuple[Project, ProjectKeys]:
    """Create a project with fresh keys. The raw keys are only in the return value."""
    project = Project(name=name, timezone=timezone_name)
    write_key = _set_write_key(project)
    secret_key = _set_secret_key(project)
    project.full_clean()
    project.save()
    return project, ProjectKeys(write_key=write_key, secret_key=secret_key)


def project_rotate_keys(*, project_id: int, write: bool = True, secret: bool = True) -> ProjectKeys:
    """Replace the project's keys; the old ones stop working at once in this process
    and within the selectors' cache lifetime in the others."""
    project = Project.objects.get(pk=project_id)
    old_hashes = [project.write_key_hash, project.secret_key_hash]
    write_key = _set_write_key(project) if write else ""
    secret_key = _set_secret_key(project) if secret else None
    project.keys_rotated_at = timezone.now()
    project.save()
    project_key_cache_clear(old_hashes)
    return ProjectKeys(write_key=write_key, secret_key=secret_key)


def membership_add(*, project_id: int, user_id: int) -> Membership:
    membership, _ = Membership.objects.get_or_create(project_id=project_id, user_id=user_id)
    return membership
