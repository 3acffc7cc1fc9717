"""Migration operations shared by the apps."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class AddIndexOnline(AddIndexConcurrently):
    """An index on a table that keeps taking writes (the prediction log): built with CREATE INDEX CONCURRENTLY on
    PostgreSQL, so serving processes go on logging while it builds; a plain CREATE INDEX elsewhere (SQLite, the
    embedded default, has no concurrent build and no concurrent writers to protect). The migration holding it must
    say `atomic = False`.

    A partitioned table (the log since serving 0012) cannot build an index concurrently as a whole: the index is
    made on the parent alone (ON ONLY, invalid until complete), built concurrently on each partition and attached
    partition by partition; the parent's index turns valid with the last one, and partitions made later get it by
    themselves. Removing one drops the parent's index, children included, in one plain DROP INDEX."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if _partitions(schema_editor, model._meta.db_table) is None:
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        self._ensure_not_in_transaction(schema_editor)
        _add_partitioned(schema_editor, model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if _partitions(schema_editor, model._meta.db_table) is None:
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        schema_editor.remove_index(model, self.index)


def _partitions(schema_editor, table: str) -> list[str] | None:
    """The table's partitions when it is a partitioned table, else None."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
        if row is None or row[0] != "p":
            return None
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass"
            " ORDER BY c.relname",
            [table],
        )
        return [name for (name,) in cursor.fetchall()]


def _add_partitioned(schema_editor, model, index) -> None:
    table = model._meta.db_table
    quote = schema_editor.quote_name
    sql = str(index.create_sql(model, schema_editor))  # CREATE INDEX "name" ON "table" (...) [WHERE ...]
    on_table = f" ON {quote(table)} "
    schema_editor.execute(sql.replace(on_table, f" ON ONLY {quote(table)} ", 1))
    for partition in _partitions(schema_editor, table):
        child = f"{partition}_{index.name}"[:63]
        child_sql = sql.replace(f"INDEX {quote(index.name)}", f"INDEX CONCURRENTLY IF NOT EXISTS {quote(child)}", 1)
        schema_editor.execute(child_sql.replace(on_table, f" ON {quote(partition)} ", 1))
        schema_editor.execute(f"ALTER INDEX {quote(index.name)} ATTACH PARTITION {quote(child)}")
