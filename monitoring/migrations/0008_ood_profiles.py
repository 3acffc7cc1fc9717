import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0007_monitor_webhook_secret"),
        ("registry", "0003_alias_plural"),
    ]

    operations = [
        migrations.CreateModel(
            name="OodProfile",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("profile", models.JSONField()),
                (
                    "reference_path",
                    models.CharField(help_text="the reference sample it was computed from", max_length=500),
                ),
                ("rows", models.PositiveIntegerField()),
                (
                    "refuse_above",
                    models.FloatField(
                        blank=True,
                        help_text="requests with a row scoring above this are refused (422); empty: flag only",
                        null=True,
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "version",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="ood_profile",
                        to="registry.modelversion",
                    ),
                ),
            ],
            options={"verbose_name": "OOD profile"},
        ),
    ]
