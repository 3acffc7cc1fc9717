# Asynchronous predictions (serving/asynchronous.py).

import django.utils.timezone
import uuid
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('serving', '0013_prediction_ood'),
    ]

    operations = [
        migrations.CreateModel(
            name='AsyncPrediction',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('model_name', models.CharField(max_length=100)),
                ('version', models.CharField(blank=True, help_text='?version= as sent', max_length=20, null=True)),
                ('alias', models.CharField(blank=True, help_text='?alias= as sent', max_length=200, null=True)),
                ('body', models.BinaryField(help_text='the request body as sent')),
                ('request_id', models.CharField(max_length=64)),
                ('caller', models.CharField(help_text='who asked (key:<id>, user:<id>): only they or an admin read it', max_length=40)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='queued', max_length=10)),
                ('status_code', models.PositiveSmallIntegerField(blank=True, help_text="the synchronous answer's", null=True)),
                ('answer', models.JSONField(blank=True, help_text="the synchronous answer's body", null=True)),
                ('attempts', models.PositiveSmallIntegerField(default=0, help_text="runs started (a lost worker's run is redone)")),
                ('callback_url', models.TextField(blank=True)),
                ('callback_secret', models.CharField(blank=True, max_length=60)),
                ('callback_status', models.CharField(choices=[('none', 'None'), ('pending', 'Pending'), ('delivered', 'Delivered'), ('failed', 'Failed')], default='none', max_length=10)),
                ('callback_outcome', models.CharField(blank=True, max_length=200)),
                ('callback_attempts', models.PositiveSmallIntegerField(default=0)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('expires_at', models.DateTimeField(db_index=True)),
            ],
            options={
                'indexes': [models.Index(fields=['status', 'created_at'], name='asyncpred_status_time')],
            },
        ),
    ]
