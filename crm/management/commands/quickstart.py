"""Prepare the embedded quickstart: an admin user, a demo project with keys and
demo data. Idempotent: a second run reuses what the first one made (kept in
var/quickstart.json, a local file of the user's own machine) and prints it again."""

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from crm.models import Profile, Project
from crm.services import membership_add, project_create, project_rotate_keys


class Command(BaseCommand):
    help = "Create the quickstart admin user, demo project and demo data (safe to run again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=2000)
        parser.add_argument("--products", type=int, default=300)
        parser.add_argument("--events", type=int, default=30_000)
        parser.add_argument("--host", default="http://127.0.0.1:8000")
        parser.add_argument("--no-train", action="store_true", help="skip training the first recommendation model")

    def handle(self, *args: Any, **options: Any) -> None:
        state_file = Path(settings.VAR_DIR) / "quickstart.json"
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}

        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        if admin is None or "admin_password" not in state:
            state["admin_password"] = secrets.token_urlsafe(12)
            if admin is None:
                admin = User.objects.create_superuser("admin", "admin@example.com", state["admin_password"])
            else:
                admin.set_password(state["admin_password"])
                admin.save()

        project = Project.objects.filter(pk=state.get("project_id")).first()
        if project is None:
            project, keys = project_create(name="Demo store")
            state.update(project_id=project.pk, write_key=keys.write_key, secret_key=keys.secret_key)
        elif "write_key" not in state:
            keys = project_rotate_keys(project_id=project.pk)
            state.update(write_key=keys.write_key, secret_key=keys.secret_key)
        membership_add(project_id=project.pk, user_id=admin.pk)
        host = options["host"]
        if settings.LOCAL_PROVIDERS and "local_service_account" not in state:
            from localproviders.channel_settings import local_service_account

            # Kept with the other secrets of this machine's quickstart (mode 600).
            state["local_service_account"] = local_service_account(base_url=host)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state, indent=2))
        state_file.chmod(0o600)
        if settings.LOCAL_PROVIDERS:
            # By name: crm imports neither delivery nor the local providers.
            call_command(
                "local_channels_configure",
                project=project.pk,
                host=host,
                service_account=json.dumps(state["local_service_account"]),
                stdout=self.stdout,
            )

        if not Profile.objects.filter(project=project).exists():
            self.stdout.write("Generating demo data…")
            call_command(
                "generate_demo_data",
                project=project.pk,
                users=options["users"],
                products=options["products"],
                events=options["events"],
                stdout=self.stdout,
            )
            # By name: crm does not import campaigns (computed in-process without a broker).
            call_command("create_demo_segments", project=project.pk, stdout=self.stdout)
            # An in-app campaign answered to "App Launched" (and a web session's first page).
            call_command("create_demo_inapp", project=project.pk, stdout=self.stdout)
            # A draft email campaign with two variants and a control group, ready to start.
            call_command("create_demo_email_campaign", project=project.pk, stdout=self.stdout)
            if not options["no_train"]:
                # The first model, so the demo recommends from day one (about 30 s; the
                # command runs the training pipeline in this process, not the web one).
                self.stdout.write("Training the first recommendation model…")
                call_command("train_recommendations", project=project.pk, no_progress=True, stdout=self.stdout)

        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Console:     {host}/admin/   user: admin   password: {state['admin_password']}",
                    f"Project:     {project.name} (id {project.pk})",
                    f"Write key:   {state['write_key']}",
                    f"Secret key:  {state['secret_key']}",
                    "Send an event:",
                    f"  curl -u '{state['write_key']}:' -H 'Content-Type: application/json' "
                    f'-d \'{{"userId": "user-0000001", "event": "Product Viewed", '
                    f'"properties": {{"product_id": "SKU-000001"}}}}\' {host}/v1/track',
                    f"Read a profile:  curl -H 'Authorization: Bearer {state['secret_key']}' "
                    f"{host}/api/v1/profiles/user-0000001",
                    "",
                    *self._local_providers_lines(host, state),
                ]
            )
        )

    def _local_providers_lines(self, host: str, state: dict[str, Any]) -> list[str]:
        if not settings.LOCAL_PROVIDERS:
            return []
        from localproviders.channel_settings import local_channel_settings

        channels = local_channel_settings(base_url=host, service_account=state["local_service_account"])
        push = {**channels["push"], "service_account": "(var/quickstart.json: local_service_account)"}
        return [
            f"Local providers (LOCAL_PROVIDERS): {host}/_local/ - outbox: {host}/admin/localproviders/outboxmessage/",
            f"  email settings:   {json.dumps(channels['email'])}",
            f"  push settings:    {json.dumps(push)}",
            f"  sms settings:     {json.dumps(channels['sms'])}",
            f"  webhook settings: {json.dumps(channels['webhook'])}  (URL: {host}/_local/webhooks/<name>)",
            "",
        ]
