# The events' (project, name, timestamp) index gains the profile as an included
# column, so the segment compiler's joins on "which profiles did X in the window"
# read the index alone. Built concurrently, then the old one dropped concurrently,
# as 0006 did: the ingest workers write to this table all the time.

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0006_event_profile_time_names"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                fields=["project", "name", "timestamp"], include=["profile"], name="event_project_name_time_pid"
            ),
        ),
        RemoveIndexConcurrently(model_name="event", name="event_project_name_time"),
    ]
