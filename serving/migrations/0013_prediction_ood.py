"""Out-of-distribution scores logged with each prediction (null: not scored). Nullable, so pods still on the
previous release keep writing the log during a rolling upgrade."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("serving", "0012_partitioned_prediction_log")]  # after: 0012 rebuilds the table from its own column list

    operations = [
        migrations.AddField(
            model_name="predictionlog",
            name="ood_scores",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="predictionlog",
            name="ood_flagged",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
