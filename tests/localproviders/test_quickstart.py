"""The quickstart points every channel at the local providers when they are on."""

from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command

from delivery.channels import channel_get


def _printed_settings(out: str) -> dict[str, dict]:
    found = {}
    for line in out.splitlines():
        for name in ("email", "push", "sms", "webhook"):
            prefix = f"  {name} settings:"
            if line.startswith(prefix):
                found[name] = json.JSONDecoder().raw_decode(line[len(prefix) :].strip())[0]
    return found


def test_quickstart_prints_settings_for_the_local_providers_that_the_channels_accept(settings, tmp_path, db):
    settings.VAR_DIR = tmp_path
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.LOCAL_PROVIDERS = True
    first, second = StringIO(), StringIO()

    call_command("quickstart", users=5, products=5, events=20, no_train=True, stdout=first)
    call_command("quickstart", users=5, products=5, events=20, no_train=True, stdout=second)

    state = json.loads((tmp_path / "quickstart.json").read_text())
    account = state["local_service_account"]
    assert account["token_uri"] == "http://127.0.0.1:8000/_local/google/token"
    printed = _printed_settings(first.getvalue())
    assert printed["email"]["host"] == "http://127.0.0.1:8000/_local/sendgrid"
    assert printed["sms"]["base_url"] == "http://127.0.0.1:8000/_local/twilio"
    assert printed["push"]["fcm_url"] == "http://127.0.0.1:8000/_local/fcm"
    for name in ("email", "sms", "webhook"):
        assert channel_get(name).settings_validate(printed[name]) == {**printed[name], "timeout_s": 10.0}
    assert channel_get("push").settings_validate({**printed["push"], "service_account": account})
    # The second run keeps the same service account.
    assert json.loads((tmp_path / "quickstart.json").read_text())["local_service_account"] == account
    assert "outbox: http://127.0.0.1:8000/admin/localproviders/outboxmessage/" in second.getvalue()


def test_quickstart_says_nothing_of_local_providers_when_they_are_off(settings, tmp_path, db):
    settings.VAR_DIR = tmp_path
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.LOCAL_PROVIDERS = False
    out = StringIO()

    call_command("quickstart", users=5, products=5, events=20, no_train=True, stdout=out)

    assert "Local providers" not in out.getvalue()
    assert "local_service_account" not in json.loads((tmp_path / "quickstart.json").read_text())
