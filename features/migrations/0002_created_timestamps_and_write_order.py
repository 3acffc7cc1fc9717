"""Created timestamps given per row, and the write order kept apart from them.

- FeatureView.created_timestamp_column: the column of ingested/pushed rows holding each value's created time.
- FeatureValue.written_at: when the value reached the offline store. Until now created_ts was always the write time,
  so existing rows take it from there; incremental materialization moves from (view, created_ts) to (view, written_at)
  with its watermark unchanged in meaning.
- OnlineValue.value_id: the offline row's id, the last tie-break ("then last written") of the online store.
"""

import django.core.validators
import django.db.models.functions.datetime
import django.utils.timezone
from django.db import migrations, models
from django.db.models import F


def written_at_from_created(apps, schema_editor) -> None:
    apps.get_model("features", "FeatureValue").objects.update(written_at=F("created_ts"))


def no_created_column_where_it_is_a_feature(apps, schema_editor) -> None:
    """A view that already has a feature named created_timestamp keeps it as a feature (and takes no created times
    until its definition names another column)."""
    views = apps.get_model("features", "FeatureView").objects.all()
    for view in views:
        if any(feature.get("name") == "created_timestamp" for feature in view.features):
            view.created_timestamp_column = ""
            view.save(update_fields=["created_timestamp_column"])


class Migration(migrations.Migration):
    dependencies = [
        ("features", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="featurevalue",
            name="written_at",
            field=models.DateTimeField(
                db_default=django.db.models.functions.datetime.Now(), default=django.utils.timezone.now
            ),
        ),
        migrations.RunPython(written_at_from_created, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name="featurevalue",
            name="featurevalue_created",
        ),
        migrations.AddIndex(
            model_name="featurevalue",
            index=models.Index(fields=["view", "written_at"], name="featurevalue_written"),
        ),
        migrations.AddField(
            model_name="featureview",
            name="created_timestamp_column",
            field=models.CharField(
                default="created_timestamp",
                blank=True,
                max_length=63,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[a-z][a-z0-9_]{0,62}$", "lowercase letters, digits or '_', starting with a letter"
                    )
                ],
            ),
        ),
        migrations.RunPython(no_created_column_where_it_is_a_feature, migrations.RunPython.noop),
        migrations.AddField(
            model_name="onlinevalue",
            name="value_id",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
    ]
