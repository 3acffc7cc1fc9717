"""On Postgres, a trigger makes the rollout decision log append-only for everyone, raw SQL included."""

from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION serving_rollout_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'rollout events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER serving_rollout_event_append_only
    BEFORE UPDATE OR DELETE ON serving_rolloutevent
    FOR EACH ROW EXECUTE FUNCTION serving_rollout_event_append_only();
"""
ALLOW = """
DROP TRIGGER IF EXISTS serving_rollout_event_append_only ON serving_rolloutevent;
DROP FUNCTION IF EXISTS serving_rollout_event_append_only();
"""


def forbid(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORBID, params=None)


def allow(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ALLOW, params=None)


class Migration(migrations.Migration):
    dependencies = [("serving", "0002_rollouts")]

    operations = [migrations.RunPython(forbid, allow)]
