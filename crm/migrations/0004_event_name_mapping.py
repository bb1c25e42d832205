# The event-name mappings move from ingestion to crm, the owner of the event
# vocabulary (crm.vocabulary), so that training and tracking read them too. The
# table is kept and renamed; ingestion 0002 drops the model from its own state.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('crm', '0003_ingest_write_path'),
        ('ingestion', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='EventNameMapping',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('source_name', models.CharField(help_text='The event name your app sends.', max_length=255)),
                        ('canonical_name', models.CharField(choices=[('Product Viewed', 'Product Viewed'), ('Product Clicked', 'Product Clicked'), ('Product Added', 'Product Added'), ('Order Completed', 'Order Completed')], max_length=32)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='crm.project')),
                    ],
                    options={
                        'ordering': ['project', 'source_name'],
                        'constraints': [models.UniqueConstraint(fields=('project', 'source_name'), name='event_name_mapping_unique')],
                        'db_table': 'ingestion_eventnamemapping',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name='eventnamemapping', table=None),
    ]
