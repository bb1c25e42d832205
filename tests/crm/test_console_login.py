"""The console's login lockout (django-axes): AXES_FAILURE_LIMIT wrong passwords
for one user from one address lock that pair out, even for the right password;
other users and addresses are unaffected; superusers see the lockouts, staff
users do not."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

LOGIN = "/admin/login/?next=/admin/"


def login(username: str, password: str, address: str) -> tuple[Client, int]:
    client = Client(REMOTE_ADDR=address)
    response = client.post(LOGIN, {"username": username, "password": password})
    return client, response.status_code


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def alice(marketer_a):  # noqa: ANN001, ANN201 - a staff member of project A, password pw-alice-123
    return marketer_a


@pytest.mark.django_db
def test_after_five_wrong_passwords_the_right_one_is_refused(alice, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    statuses = [login("alice", "wrong", "198.51.100.7")[1] for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # the form again with its error; the fifth locks out
    client, status = login("alice", "pw-alice-123", "198.51.100.7")
    assert (status, logged_in(client)) == (429, False)
    attempt = AccessAttempt.objects.get(username="alice", ip_address="198.51.100.7")
    assert attempt.failures_since_start == 6  # the refused right one counts too, restarting the cool-off


@pytest.mark.django_db
def test_the_lockout_spares_other_users_and_addresses(alice, settings):
    get_user_model().objects.create_user("bob", password="pw-bob-123", is_staff=True)
    for _ in range(5):
        login("alice", "wrong", "198.51.100.7")
    assert login("alice", "pw-alice-123", "198.51.100.7")[1] == 429
    # The same user from another address, another user from the same address.
    client, status = login("alice", "pw-alice-123", "198.51.100.8")
    assert (status, logged_in(client)) == (302, True)
    client, status = login("bob", "pw-bob-123", "198.51.100.7")
    assert (status, logged_in(client)) == (302, True)


@pytest.mark.django_db
def test_fewer_failures_than_the_limit_then_the_right_password_logs_in(alice):
    for _ in range(4):
        login("alice", "wrong", "198.51.100.7")
    client, status = login("alice", "pw-alice-123", "198.51.100.7")
    assert (status, logged_in(client)) == (302, True)
    # A success resets the count (AXES_RESET_ON_SUCCESS).
    assert not AccessAttempt.objects.filter(username="alice", ip_address="198.51.100.7").exists()


@pytest.mark.django_db
def test_superusers_see_the_lockouts_and_staff_users_do_not(alice):
    for _ in range(5):
        login("alice", "wrong", "198.51.100.7")
    root = get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123")
    admin = Client()
    admin.force_login(root)
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "198.51.100.7" in html and "Locked Out" in html
    assert "Access attempts" in admin.get("/admin/").content.decode()

    staff = Client()
    staff.force_login(alice)
    assert staff.get("/admin/axes/accessattempt/").status_code == 403
    assert staff.get("/admin/axes/accesslog/").status_code == 403
    assert "Access attempts" not in staff.get("/admin/").content.decode()
