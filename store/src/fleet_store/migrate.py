"""Numbered SQL migrations from ``sql/``, applied in order, each in its own transaction.

Applied files are recorded with a checksum in ``schema_migrations``; changing
one after it was applied is an error (write a new migration instead). A
session advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg
import msgspec

from fleet_store.errors import MigrationError
from fleet_store.resources import SQL_DIR

_FILE_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x666C656574  # "fleet"


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class TimescaleFeatures(msgspec.Struct, frozen=True):
    """What the server's TimescaleDB can do; the Apache build lacks the policy features."""

    version: str
    license: str
    postgis: str | None

    @property
    def policies(self) -> bool:
        """Retention/compression policies and continuous aggregates (Timescale license only)."""
        return self.license == "timescale"


class MigrationReport(msgspec.Struct, frozen=True):
    applied: list[str]
    already: list[str]
    features: TimescaleFeatures


def load_migrations(sql_dir: Path) -> list[Migration]:
    """Every ``NNN_name.sql`` in order; a stray or duplicate number is an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_case.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        migrations[version] = Migration(version, path.stem, path.read_text())
    if not migrations:
        raise MigrationError(f"no migrations in {sql_dir}")
    return [migrations[v] for v in sorted(migrations)]


async def timescale_features(conn: asyncpg.Connection) -> TimescaleFeatures:
    """Installed TimescaleDB version, its license and PostGIS, or MigrationError if TimescaleDB is missing."""
    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if version is None:
        raise MigrationError("TimescaleDB is not installed in this database; hypertables are required")
    license_ = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    postgis = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
    return TimescaleFeatures(version=version, license=license_ or "unknown", postgis=postgis)


async def migrate(database_url: str, sql_dir: Path | None = None) -> MigrationReport:
    """Apply every migration not yet applied; a second run applies nothing."""
    migrations = load_migrations(sql_dir or SQL_DIR)
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        applied: list[str] = []
        already: list[str] = []
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied; add a new migration instead"
                    )
                already.append(migration.name)
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.name} failed: {exc}") from exc
            applied.append(migration.name)
        features = await timescale_features(conn)
        return MigrationReport(applied=applied, already=already, features=features)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
