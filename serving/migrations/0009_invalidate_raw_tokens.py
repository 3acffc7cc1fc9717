"""Users' tokens move to django-rest-knox (hashed, expiring): DRF's authtoken table, which kept each token raw (and
the admin showed it), is emptied and dropped. Its tokens are not carried over: whoever could open the admin could have
copied them. A caller still sending one gets a 401 saying to get a new token (serving/tokens.py)."""

from django.db import migrations


def drop_raw_tokens(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        (count,) = cursor.fetchone()
    schema_editor.execute("DROP TABLE authtoken_token")
    schema_editor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")
    if count:
        print(f"\n  {count} raw API token(s) invalidated: their users get new ones with POST /api/v1/auth/token/")


class Migration(migrations.Migration):
    dependencies = [("serving", "0008_prediction_log_key_index"), ("knox", "0009_extend_authtoken_field")]

    operations = [migrations.RunPython(drop_raw_tokens, migrations.RunPython.noop, elidable=False)]
