# The event-name mappings now belong to crm (crm 0004 took over the table).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('ingestion', '0001_initial'),
        ('crm', '0004_event_name_mapping'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='EventNameMapping')],
            database_operations=[],
        ),
    ]
