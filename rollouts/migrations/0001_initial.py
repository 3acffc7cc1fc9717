"""The rollout models, taken over from serving with their tables as they are (serving_rollout, serving_rolloutevent).

State only: serving/migrations/0006 forgot the models, this migration takes them into the rollouts app's state
without touching the database, so the rows, their foreign keys and serving/migrations/0003's append-only trigger stay.
Their content types move with them (app_label serving -> rollouts, same ids), so permissions granted on rollouts
and the admin's history of them (LogEntry rows) still point at the right model.
"""

import django.db.models.deletion
import rollouts.models
from django.conf import settings
from django.db import migrations, models

MOVED = ("rollout", "rolloutevent")


def _move_content_types(apps, schema_editor, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.db_manager(schema_editor.connection.alias)
    for model in MOVED:
        old = types.filter(app_label=source, model=model).first()
        if old is None:
            continue  # a fresh database: post_migrate creates the content types afterwards
        # A row already made for the target (say, by a migrate that ran before this one existed) has no history:
        # the old row, which permissions and log entries point at, takes its place.
        types.filter(app_label=target, model=model).delete()
        old.app_label = target
        old.save(update_fields=["app_label"])
    types.clear_cache()
    from django.contrib.contenttypes.models import ContentType as LiveContentType

    LiveContentType.objects.clear_cache()


def content_types_to_rollouts(apps, schema_editor) -> None:
    _move_content_types(apps, schema_editor, "serving", "rollouts")


def content_types_to_serving(apps, schema_editor) -> None:
    _move_content_types(apps, schema_editor, "rollouts", "serving")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('registry', '0003_alias_plural'),
        ('serving', '0006_rollouts_move_to_their_app'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Rollout',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('mode', models.CharField(choices=[('canary', 'Canary'), ('shadow', 'Shadow')], default='canary', max_length=10)),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('paused', 'Paused'), ('promoted', 'Promoted'), ('rolled_back', 'Rolled Back'), ('aborted', 'Aborted')], default='pending', max_length=20)),
                        ('stages', models.JSONField(default=rollouts.models.default_stages, help_text='candidate traffic percent per stage, ascending')),
                        ('stage_seconds', models.PositiveIntegerField(default=300)),
                        ('stage_index', models.PositiveIntegerField(default=0)),
                        ('stage_started_at', models.DateTimeField(blank=True, null=True)),
                        ('stage_extensions', models.PositiveIntegerField(default=0)),
                        ('shadow_percent', models.FloatField(default=0, help_text='percent of requests mirrored to the candidate')),
                        ('salt', models.CharField(max_length=64)),
                        ('analysis', models.JSONField(blank=True, default=rollouts.models.default_analysis, help_text='thresholds overriding the defaults')),
                        ('reason', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('baseline', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='rollouts_as_baseline', to='registry.modelversion')),
                        ('candidate', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='rollouts_as_candidate', to='registry.modelversion')),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                        ('model', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='rollouts', to='registry.registeredmodel')),
                    ],
                    options={
                        'db_table': 'serving_rollout',
                        'ordering': ['-created_at'],
                    },
                ),
                migrations.CreateModel(
                    name='RolloutEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('action', models.CharField(max_length=40)),
                        ('stage_index', models.PositiveIntegerField(blank=True, null=True)),
                        ('figures', models.JSONField(blank=True, default=dict)),
                        ('message', models.TextField(blank=True)),
                        ('actor_name', models.CharField(default='system', max_length=150)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('rollout', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='events', to='rollouts.rollout')),
                    ],
                    options={
                        'db_table': 'serving_rolloutevent',
                        'ordering': ['created_at', 'id'],
                    },
                ),
                migrations.AddConstraint(
                    model_name='rollout',
                    constraint=models.UniqueConstraint(condition=models.Q(('status__in', ['pending', 'running', 'paused'])), fields=('model',), name='one_active_rollout_per_model'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_rollouts, content_types_to_serving),
    ]
