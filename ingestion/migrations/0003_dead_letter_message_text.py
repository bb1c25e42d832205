# A dead letter's message as JSON text (it may hold NUL characters, which jsonb refuses).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ingestion', '0002_event_name_mapping_to_crm'),
    ]

    operations = [
        # jsonb::text, PostgreSQL's own rendering of each stored message.
        migrations.AlterField(
            model_name='deadletter',
            name='message',
            field=models.TextField(),
        ),
    ]
