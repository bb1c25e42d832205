# The events' (profile, timestamp) index gains the project and the name as included
# columns, so the segment compiler's per-profile probes are index-only scans. Built
# concurrently (then the old one dropped concurrently): the events table is the
# biggest there is and the ingest workers write to it all the time.

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm", "0005_project_rate_limits"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                fields=["profile", "timestamp"], include=["project", "name"], name="event_profile_time_names"
            ),
        ),
        RemoveIndexConcurrently(model_name="event", name="event_profile_time"),
    ]
