"""Demo data: a show with a few products."""

from __future__ import annotations

from typing import Any

from livecore.catalogue import Catalogue, Shows
from livecore.ids import new_id
from livecore.models import ProductIn, ShowIn

DEMO_PRODUCTS = [
    ("Aurora wireless earbuds", 7999, "USD", 500),
    ("Desert rose perfume 50 ml", 12900, "AED", 300),
    ("Handwoven silk scarf", 4500, "USD", 200),
]


async def seed_demo(catalogue: Catalogue, shows: Shows) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    suffix = new_id("x")[-6:]
    products = []
    for i, (name, price, currency, stock) in enumerate(DEMO_PRODUCTS):
        products.append(await catalogue.create_product(ProductIn(
            sku=f"DEMO-{suffix}-{i}", name=name, price_cents=price, currency=currency,
            image_url=f"/static/product-{i}.svg", stock=stock)))
    show = await shows.create(ShowIn(title="LiveCore launch show"))
    return show, products
