"""The crm reads and writes the delivery service uses: a profile's contact facts
(latest push token), and clearing dead push tokens."""

from datetime import UTC, datetime, timedelta

import pytest

from crm.models import Device, Profile
from crm.selectors import profiles_contact
from crm.services import devices_clear_push_tokens

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_contact_facts_take_the_latest_device_with_a_token_and_only_the_projects_profiles(project_a, project_b):
    a = Profile.objects.create(project=project_a[0], email="a@x.io", phone="+1555", timezone="Asia/Tokyo",
                               email_subscribed=False, push_subscribed=True)  # fmt: skip
    other = Profile.objects.create(project=project_b[0], email="o@x.io")
    Device.objects.create(project=project_a[0], profile=a, device_id="1", push_token="t-old", last_seen=T0)
    Device.objects.create(
        project=project_a[0], profile=a, device_id="2", push_token="t-new", last_seen=T0 + timedelta(1)
    )
    Device.objects.create(project=project_a[0], profile=a, device_id="3", push_token="", last_seen=T0 + timedelta(2))
    facts = profiles_contact(project_id=project_a[0].pk, profile_ids=[a.pk, other.pk])
    assert list(facts) == [a.pk]
    c = facts[a.pk]
    assert (c.email, c.phone, c.push_token, c.timezone) == ("a@x.io", "+1555", "t-new", "Asia/Tokyo")
    assert (c.subscribed("email"), c.subscribed("push"), c.subscribed("sms"), c.subscribed("webhook")) == (
        False, True, None, None,
    )  # fmt: skip


def test_contact_facts_without_push_tokens_read_no_device(project_a, django_assert_num_queries):
    a = Profile.objects.create(project=project_a[0], email="a@x.io", timezone="Asia/Tokyo", email_subscribed=True)
    Device.objects.create(project=project_a[0], profile=a, device_id="1", push_token="t-1", last_seen=T0)
    with django_assert_num_queries(1) as queries:
        facts = profiles_contact(project_id=project_a[0].pk, profile_ids=[a.pk], push_tokens=False)
    assert "crm_device" not in queries.captured_queries[0]["sql"]
    c = facts[a.pk]
    assert (c.email, c.push_token, c.timezone, c.subscribed("email")) == ("a@x.io", "", "Asia/Tokyo", True)


def test_clearing_a_dead_token_touches_only_that_profiles_devices_in_the_project(project_a, project_b):
    a = Profile.objects.create(project=project_a[0])
    b = Profile.objects.create(project=project_a[0])
    other = Profile.objects.create(project=project_b[0])
    Device.objects.create(project=project_a[0], profile=a, device_id="a1", push_token="dead")
    Device.objects.create(project=project_a[0], profile=a, device_id="a2", push_token="alive")
    Device.objects.create(project=project_a[0], profile=b, device_id="b1", push_token="dead")
    Device.objects.create(project=project_b[0], profile=other, device_id="o1", push_token="dead")
    assert devices_clear_push_tokens(project_id=project_a[0].pk, tokens=[(a.pk, "dead"), (other.pk, "dead")]) == 1
    assert dict(Device.objects.values_list("device_id", "push_token")) == {
        "a1": "", "a2": "alive", "b1": "dead", "o1": "dead",
    }  # fmt: skip
    assert devices_clear_push_tokens(project_id=project_a[0].pk, tokens=[]) == 0
