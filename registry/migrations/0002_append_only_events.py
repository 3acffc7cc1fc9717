"""On Postgres, a trigger makes the registry event log append-only for everyone, raw SQL included."""

from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION registry_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'registry events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER registry_event_append_only
    BEFORE UPDATE OR DELETE ON registry_registryevent
    FOR EACH ROW EXECUTE FUNCTION registry_event_append_only();
"""
ALLOW = """
DROP TRIGGER IF EXISTS registry_event_append_only ON registry_registryevent;
DROP FUNCTION IF EXISTS registry_event_append_only();
"""


def forbid(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORBID, params=None)


def allow(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ALLOW, params=None)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]

    operations = [migrations.RunPython(forbid, allow)]
