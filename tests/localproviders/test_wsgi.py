"""localproviders.wsgi, the local provider server's own WSGI application (the
campaigns benchmark serves it): /_local/ requests reach the same views as
through config.wsgi, without the middleware, and answer the same; anything
else goes through Django."""

from __future__ import annotations

import json

import pytest
from django.core import signing

from localproviders.models import OutboxMessage
from tests.conftest import wsgi_call

pytestmark = pytest.mark.django_db(transaction=True)

FCM = "/_local/fcm/v1/projects/engage-local/messages:send"
SENDGRID = "/_local/sendgrid/v3/mail/send"


def _call(app, path: str, body: object = None, method: str = "POST", **headers: str):  # noqa: ANN001, ANN202
    raw = json.dumps(body).encode() if body is not None else b""
    return wsgi_call(path, method=method, body=raw, app=app, **headers)


@pytest.fixture
def apps(settings):  # noqa: ANN001, ANN201
    settings.LOCAL_PROVIDERS = True
    from config.wsgi import application as full
    from localproviders.wsgi import application as local

    return full, local


def _bearer() -> str:
    # A token as this server's Google token endpoint issues it (localproviders.views).
    return "Bearer " + signing.dumps({"iss": "sa@p.iam.gserviceaccount.com"}, salt="localproviders.google.token")


def test_an_fcm_send_is_answered_and_stored_as_through_the_full_stack(apps):
    full, local = apps
    push = {"message": {"token": "tok-0001-abcdefghijklmnopqrstuvwxyz", "notification": {"title": "Hi"},
                        "data": {"engage_message_id": "7"}}}  # fmt: skip
    answers = [_call(app, FCM, push, HTTP_AUTHORIZATION=_bearer()) for app in (full, local)]

    assert [status for status, _, _ in answers] == [200, 200]
    assert [json.loads(body)["name"].rsplit("/", 1)[0] for _, _, body in answers] == [
        "projects/engage-local/messages"
    ] * 2
    assert answers[1][1]["Content-Type"] == "application/json"
    rows = list(OutboxMessage.objects.order_by("id").values_list("provider", "message_key", "subject", "duplicate"))
    assert rows == [("fcm", "7", "Hi", False), ("fcm", "7", "Hi", True)]


def test_the_checks_and_error_shapes_are_the_views_own(apps):
    full, local = apps
    for app in (full, local):
        status, _, body = _call(app, FCM, {"message": {"token": "t" * 30}}, HTTP_AUTHORIZATION="Bearer forged")
        assert (status, json.loads(body)["error"]["status"]) == (401, "UNAUTHENTICATED")
        status, _, body = _call(app, SENDGRID, {"personalizations": []}, HTTP_AUTHORIZATION="Bearer SG.key")
        assert (status, json.loads(body)["errors"][0]["field"]) == (400, "personalizations")
        assert _call(app, SENDGRID, method="GET")[0] == 405
    assert OutboxMessage.objects.count() == 0


def test_unknown_local_paths_are_404_other_paths_go_through_django_and_off_means_404(apps, settings):
    _, local = apps
    assert _call(local, "/_local/nothing-here")[0] == 404
    status, _, body = _call(local, "/healthz", method="GET")
    assert (status, json.loads(body)) == (200, {"ok": True})
    settings.LOCAL_PROVIDERS = False
    assert _call(local, FCM, {"message": {}}, HTTP_AUTHORIZATION=_bearer())[0] == 404
