# The log's partial index by routing key, built without blocking the log's writers (config/migration_ops.py).

from django.db import migrations, models

from config.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("serving", "0007_prediction_log_caller"),
    ]

    operations = [
        AddIndexOnline(
            model_name="predictionlog",
            index=models.Index(
                condition=models.Q(("routing_key", ""), _negated=True),
                fields=["routing_key", "model_name", "created_at"],
                name="predlog_key_model_time",
            ),
        ),
    ]
