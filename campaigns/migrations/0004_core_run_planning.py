from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_campaigns"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaignrun",
            name="planning_finished_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
