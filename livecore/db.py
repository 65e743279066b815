"""PostgreSQL pool and migrations (ordered SQL files, one version table)."""

from __future__ import annotations

from importlib import resources

import asyncpg

MIGRATIONS_PACKAGE = "livecore.migrations"
# Any constant works; it only has to be the same for every node.
MIGRATION_LOCK_ID = 7_340_001


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     command_timeout=10, timeout=5)
    assert pool is not None
    return pool


def migration_files() -> list[tuple[str, str]]:
    files = sorted(
        (f.name, f.read_text(encoding="utf-8"))
        for f in resources.files(MIGRATIONS_PACKAGE).iterdir()
        if f.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), sql) for name, sql in files]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the versions applied (empty = no-op)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        # The advisory lock makes concurrent `migrate` runs (one per node) safe.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await conn.close()
