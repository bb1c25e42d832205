import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from crm.models import Profile, Project
from crm.selectors import project_for_secret_key, project_for_write_key


@pytest.mark.django_db
def test_create_project_prints_one_json_line_with_working_keys():
    out = StringIO()
    call_command("create_project", "My Shop", "--timezone", "Europe/Paris", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) == {"id", "name", "write_key", "secret_key"}
    project = Project.objects.get(pk=data["id"])
    assert (project.name, project.timezone) == ("My Shop", "Europe/Paris")
    assert project_for_write_key(data["write_key"]) == project
    assert project_for_secret_key(data["secret_key"]) == project


@pytest.mark.django_db
def test_create_project_rejects_an_unknown_timezone():
    with pytest.raises(CommandError, match="timezone"):
        call_command("create_project", "X", "--timezone", "Nowhere/City", stdout=StringIO())
    assert Project.objects.count() == 0


@pytest.mark.django_db
def test_quickstart_runs_twice_with_the_same_keys(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.RECS_MODEL_PARAMS = {"epochs": 1, "dim": 8, "min_steps": 20, "batch_size": 128}  # seconds, not minutes
    settings.LOCAL_PROVIDERS = True
    first, second = StringIO(), StringIO()
    call_command("quickstart", users=30, products=40, events=200, stdout=first)
    call_command("quickstart", users=30, products=40, events=200, stdout=second)
    state = json.loads((tmp_path / "quickstart.json").read_text())
    assert Project.objects.count() == 1
    assert Profile.objects.count() == 30
    for out in (first, second):
        assert state["write_key"] in out.getvalue() and state["admin_password"] in out.getvalue()
        assert "curl -u" in out.getvalue()
    assert project_for_write_key(state["write_key"]) == Project.objects.get()
    # The demo project's channels point at the local providers, saved through the delivery service.
    from delivery.models import ChannelSettings

    assert sorted(ChannelSettings.objects.values_list("channel", "enabled")) == [
        ("email", True), ("push", True), ("sms", True), ("webhook", True)
    ]  # fmt: skip
    assert ChannelSettings.objects.get(channel="email").settings["host"] == "http://127.0.0.1:8000/_local/sendgrid"
    # The demo store's example segments (campaigns' create_demo_segments).
    from campaigns.models import Segment

    assert Segment.objects.count() == 4
    # And an in-app campaign, live (campaigns' create_demo_inapp).
    from campaigns.models import Campaign

    # And a draft email campaign, A/B with a control group, ready to start (create_demo_email_campaign).
    assert sorted(Campaign.objects.values_list("name", "channel", "status")) == [
        ("Picked for you", "in_app", "scheduled"),
        ("We picked these for you (demo A/B)", "email", "draft"),
    ]
    # The first run trained a model, so the demo recommends from the start; the second did not retrain.
    from recommendations.models import ModelVersion

    assert list(ModelVersion.objects.values_list("status", flat=True)) == ["active"]
    assert "Training the first recommendation model" not in second.getvalue()
