"""The migrated schema itself, read back from the database the migrations built."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.schema import CreateIndex

from tillpoint.adapters.db import migrate
from tillpoint.adapters.db import tables as t


class TestPartialIndexesMatchTheMigrations:
    def test_the_predicates_derived_from_the_status_sets_are_the_migrated_ones(
        self, tmp_path: Path
    ) -> None:
        """tables.py derives each partial index's `status IN (...)` from the domain's status
        sets; the migrations spell it out. SQLite keeps every index's CREATE statement as it was
        run, so a status set that changed without a migration shows up here."""
        path = tmp_path / "migrated.db"
        migrate.upgrade(f"sqlite+aiosqlite:///{path}")
        with closing(sqlite3.connect(path)) as db:
            migrated = dict(
                db.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                )
            )
        partial = [
            index
            for table in t.metadata.sorted_tables
            for index in table.indexes
            if index.dialect_options["sqlite"]["where"] is not None
        ]
        assert {index.name for index in partial} >= {
            "uq_payments_one_active_per_order",
            "ix_payment_transactions_due",
            "ix_webhook_events_due",
        }
        for index in partial:
            assert migrated[index.name] == str(CreateIndex(index).compile(dialect=sqlite_dialect()))
