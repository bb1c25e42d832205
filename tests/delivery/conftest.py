"""A fake channel per name, registered in place of the real ones: the delivery
core's tests need a provider that answers as told, and records what it got.
(The real channels run against the local provider server in their own tests.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from crm.models import Profile, Project
from delivery.channels.base import Outgoing, Result
from delivery.models import ChannelSettings
from delivery.outcomes import Outcome, outcome_hook_register, outcome_hook_unregister
from tests.localproviders.server import (  # noqa: F401 - fixtures of the channels' tests
    channel_settings,
    local_server,
    local_server_url,
    local_service_account_key,
)


@pytest.fixture
def told() -> Iterator[list[Outcome]]:
    """The outcomes the delivery service tells its hooks during the test."""
    heard: list[Outcome] = []

    def hook(outcomes):  # noqa: ANN001, ANN202
        heard.extend(outcomes)

    outcome_hook_register(hook)
    yield heard
    outcome_hook_unregister(hook)


SECRET_KEYS = ("api_key", "secret")


class FakeChannel:
    """Sends every message (provider id "p-<id>") unless `answer` says otherwise."""

    def __init__(self, name: str, max_batch: int = 100) -> None:
        self.name = name
        self.max_batch = max_batch
        self.calls: list[list[Outgoing]] = []
        self.answer: Callable[[Outgoing], Result] | None = None
        self._lock = threading.Lock()

    def settings_validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        if not settings.get("api_key"):
            raise ValidationError({"api_key": "an API key is required"})
        if "from_email" in settings and "@" not in str(settings["from_email"]):
            raise ValidationError({"from_email": "must be an email address"})
        return settings

    def settings_public(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {k: ("••••" + str(v)[-2:] if k in SECRET_KEYS and v else v) for k, v in settings.items()}

    def send_batch(self, settings: dict[str, Any], messages: list[Outgoing]) -> list[Result]:
        with self._lock:
            self.calls.append(list(messages))
        if self.answer is None:
            return [Result(message_id=m.message_id, provider_id=f"p-{m.message_id}") for m in messages]
        return [self.answer(m) for m in messages]

    @property
    def sent(self) -> list[Outgoing]:
        return [m for call in self.calls for m in call]


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeChannel]:
    registry = {name: FakeChannel(name) for name in ("email", "push", "sms", "webhook")}

    def get(name: str) -> FakeChannel:
        return registry[name]

    for module in (
        "delivery.channels",
        "delivery.services.enqueue",
        "delivery.services.send",
        "delivery.services.settings",
        "delivery.admin",
    ):
        monkeypatch.setattr(f"{module}.channel_get", get)
    return registry


@pytest.fixture
def shop(project_a) -> Project:
    """Project A, with every channel configured."""
    project = project_a[0]
    for name in ("email", "push", "sms", "webhook"):
        ChannelSettings.objects.create(project=project, channel=name, settings={"api_key": "k-123456"})
    return project


@pytest.fixture
def make_profile(shop: Project) -> Callable[..., Profile]:
    counter = iter(range(1, 10_000))

    def make(project: Project | None = None, **fields: Any) -> Profile:
        n = next(counter)
        fields.setdefault("user_id", f"u{n}")
        fields.setdefault("email", f"u{n}@example.com")
        return Profile.objects.create(project=project or shop, **fields)

    return make
