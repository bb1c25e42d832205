"""The delivery service and the in-app channel: in-app messages are recorded
when shown (delivery.services.record), never enqueued or sent, and have no
provider settings."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from crm.models import Profile
from delivery.channels import channel_get
from delivery.models import Message
from delivery.services import MessageIn, channel_settings_save, messages_enqueue
from delivery.services.record import messages_record

pytestmark = pytest.mark.django_db


def test_the_delivery_service_refuses_to_send_in_app_saying_why(project_a):
    project, _ = project_a
    profile = Profile.objects.create(project=project, user_id="u1")
    with pytest.raises(ValueError, match="in_app has no provider channel"):
        channel_get("in_app")
    with pytest.raises(ValidationError) as info:
        channel_settings_save(project_id=project.pk, channel="in_app", settings={})
    assert "no provider settings" in info.value.message_dict["channel"][0]
    with pytest.raises(ValueError, match=r"messages\[0\].channel: in_app messages are not enqueued"):
        messages_enqueue(
            project_id=project.pk, messages=[MessageIn(profile_id=profile.pk, channel="in_app", idempotency_key="k1")]
        )
    assert Message.objects.count() == 0


def test_recording_is_idempotent_and_writes_only_the_projects_own_profiles(project_a, project_b):
    project, other = project_a[0], project_b[0]
    mine = Profile.objects.create(project=project, user_id="u1")
    theirs = Profile.objects.create(project=other, user_id="u1")
    shown = MessageIn(profile_id=mine.pk, channel="in_app", idempotency_key="k1", source="campaign:1",
                      content={"html": "hi"})  # fmt: skip
    held = MessageIn(profile_id=mine.pk, channel="in_app", idempotency_key="k2", skip_reason="control")
    foreign = MessageIn(profile_id=theirs.pk, channel="in_app", idempotency_key="k3")
    ids = messages_record(project_id=project.pk, messages=[shown, held, foreign])
    assert sorted(ids) == ["k1", "k2"]
    assert messages_record(project_id=project.pk, messages=[shown]) == {}
    rows = {m.idempotency_key: m for m in Message.objects.all()}
    assert sorted(rows) == ["k1", "k2"]
    assert (rows["k1"].state, rows["k1"].content, rows["k1"].source) == ("sent", {"html": "hi"}, "campaign:1")
    assert (rows["k2"].state, rows["k2"].skip_reason, rows["k2"].sent_at) == ("skipped", "control", None)
    with pytest.raises(ValueError, match=r"messages\[0\].channel: only in_app"):
        messages_record(project_id=project.pk, messages=[MessageIn(profile_id=mine.pk, channel="email",
                                                                   idempotency_key="k4")])  # fmt: skip
