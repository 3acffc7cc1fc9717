"""The rollout models moved to the rollouts app: serving forgets them, the database keeps the tables as they are.

State only: serving_rollout and serving_rolloutevent (with 0003's append-only trigger) stay; rollouts/migrations/
0001_initial.py takes them into its state and moves their content types, so permissions and admin history survive.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('serving', '0005_prediction_outcome_choices'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name='rollout', name='one_active_rollout_per_model'),
                migrations.DeleteModel(name='RolloutEvent'),
                migrations.DeleteModel(name='Rollout'),
            ],
            database_operations=[],
        ),
    ]
