"""Products and shows: the durable catalogue in PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg

from livecore.errors import NotFound, ShowEnded
from livecore.ids import new_id, now_ms
from livecore.models import ProductIn, ShowIn

PRODUCT_COLS = "id, sku, name, price_cents, currency, image_url, stock"
SHOW_COLS = "id, title, status, scheduled_at, started_at, ended_at, pinned_product_id, created_at"


def product_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row["id"], "sku": row["sku"], "name": row["name"],
            "price_cents": row["price_cents"], "currency": row["currency"],
            "image_url": row["image_url"], "stock": row["stock"]}


class Catalogue:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_product(self, data: ProductIn) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"INSERT INTO products ({PRODUCT_COLS}, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
            f" RETURNING {PRODUCT_COLS}",
            new_id("p"), data.sku, data.name, data.price_cents, data.currency,
            data.image_url, data.stock, now_ms())
        result = product_dict(row)
        assert result is not None
        return result

    async def get_product(self, product_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(f"SELECT {PRODUCT_COLS} FROM products WHERE id=$1", product_id)
        if row is None:
            raise NotFound("unknown product")
        result = product_dict(row)
        assert result is not None
        return result

    async def list_products(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {PRODUCT_COLS} FROM products ORDER BY created_at, id LIMIT $1", limit)
        return [d for d in (product_dict(r) for r in rows) if d is not None]


def show_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "status": row["status"],
            "scheduled_at": row["scheduled_at"], "started_at": row["started_at"],
            "ended_at": row["ended_at"], "created_at": row["created_at"]}


class Shows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, data: ShowIn) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"INSERT INTO shows (id, title, scheduled_at, created_at) VALUES ($1,$2,$3,$4)"
            f" RETURNING {SHOW_COLS}", new_id("s"), data.title, data.scheduled_at, now_ms())
        assert row is not None
        return show_dict(row)

    async def get(self, show_id: str) -> dict[str, Any] | None:
        if "\x00" in show_id:
            return None  # PostgreSQL text cannot hold NUL: no show can have this id
        row = await self.pool.fetchrow(f"SELECT {SHOW_COLS} FROM shows WHERE id=$1", show_id)
        return None if row is None else show_dict(row)

    async def require(self, show_id: str) -> dict[str, Any]:
        show = await self.get(show_id)
        if show is None:
            raise NotFound("unknown show")
        return show

    async def pinned_product(self, show_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT p.id, p.sku, p.name, p.price_cents, p.currency, p.image_url, p.stock"
            " FROM shows s JOIN products p ON p.id = s.pinned_product_id WHERE s.id=$1", show_id)
        return product_dict(row)

    async def set_status(self, show_id: str, status: str) -> tuple[dict[str, Any], bool]:
        """Move the show forward (scheduled → live → ended). Returns (show, changed)."""
        show = await self.require(show_id)
        if show["status"] == status:
            return show, False
        if show["status"] == "ended":
            raise ShowEnded()
        stamp = "started_at" if status == "live" else "ended_at"
        row = await self.pool.fetchrow(
            f"UPDATE shows SET status=$2, {stamp}=$3 WHERE id=$1 AND status <> 'ended'"
            f" RETURNING {SHOW_COLS}", show_id, status, now_ms())
        if row is None:
            raise ShowEnded()
        return show_dict(row), True

    async def pin(self, show_id: str, product_id: str | None) -> dict[str, Any] | None:
        await self.require(show_id)
        product = None
        if product_id is not None:
            row = await self.pool.fetchrow(f"SELECT {PRODUCT_COLS} FROM products WHERE id=$1", product_id)
            if row is None:
                raise NotFound("unknown product")
            product = product_dict(row)
        await self.pool.execute("UPDATE shows SET pinned_product_id=$2 WHERE id=$1", show_id, product_id)
        return product
