"""REST API (PROTOCOL §2, §3, §6). Handlers are thin: parse, authorise, call the domain."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import AppContext
from gateway.errors import JSONBody
from gateway.http_auth import require_claims
from livecore.auth import Claims
from livecore.deals import deal_of_reservation, fingerprint, public_deal
from livecore.errors import BadRequest, Forbidden, NotFound, ValidationFailed
from livecore.ids import new_id
from livecore.models import ClaimIn, ConfirmIn, DealIn, FaqIn, ProductIn, ShowIn, TokenIn, parse

MAX_IDEMPOTENCY_KEY = 200


def ctx_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def json_body(request: Request, *, optional: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("a JSON body is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("malformed JSON body") from None


def claims(request: Request) -> Claims:
    return require_claims(request, ctx_of(request).tokens)


def staff(request: Request, show_id: str | None, *roles: str) -> Claims:
    c = claims(request)
    c.require(show_id, *roles)
    return c


async def create_token(request: Request) -> Response:
    ctx = ctx_of(request)
    c = claims(request)
    if c.role != "admin":
        raise Forbidden("only admins mint tokens")
    data = parse(TokenIn, await json_body(request))
    if data.show == "*" and data.role != "admin":
        raise ValidationFailed("only admin tokens may span shows (show \"*\")", field="show")
    if not c.can_act_on(data.show):
        # An admin token scoped to one show mints for that show only, never "*".
        raise Forbidden("token is for another show")
    token, expires_at = ctx.tokens.mint(sub=data.sub, name=data.name, role=data.role,
                                        show=data.show, ttl_s=data.ttl_s)
    return JSONBody({"token": token, "expires_at": expires_at}, status_code=201)


async def guest_token(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    show = await ctx.shows.get(show_id)
    if show is None:
        raise NotFound("unknown show")
    guest_id = new_id("guest")
    name = f"Guest {guest_id[-4:]}"
    token, expires_at = ctx.tokens.mint(sub=guest_id, name=name, role="viewer", show=show_id,
                                        ttl_s=ctx.settings.guest_ttl_s)
    return JSONBody({"token": token, "expires_at": expires_at,
                     "user": {"id": guest_id, "name": name, "role": "viewer"}}, status_code=201)


async def create_product(request: Request) -> Response:
    ctx = ctx_of(request)
    staff(request, None, "admin", "host")
    data = parse(ProductIn, await json_body(request))
    return JSONBody(await ctx.services.catalogue.create_product(data), status_code=201)


async def list_products(request: Request) -> Response:
    ctx = ctx_of(request)
    staff(request, None, "admin", "host", "moderator")
    return JSONBody({"products": await ctx.services.catalogue.list_products()})


async def get_product(request: Request) -> Response:
    ctx = ctx_of(request)
    return JSONBody(await ctx.services.catalogue.get_product(request.path_params["product"]))


async def create_show(request: Request) -> Response:
    ctx = ctx_of(request)
    staff(request, None, "admin", "host")
    data = parse(ShowIn, await json_body(request))
    show = await ctx.shows.create(data)
    show.update(pinned=None, deal=None, viewers=0)
    return JSONBody(show, status_code=201)


async def show_snapshot(ctx: AppContext, show_id: str) -> dict[str, Any]:
    show = await ctx.shows.get(show_id)
    if show is None:
        raise NotFound("unknown show")
    deal = await ctx.services.deals.live_deal(show_id)
    show["pinned"] = await ctx.shows.pinned_product(show_id)
    show["deal"] = public_deal(deal) if deal else None
    show["viewers"] = await ctx.hub.viewers(show_id)
    return dict(show)


async def get_show(request: Request) -> Response:
    return JSONBody(await show_snapshot(ctx_of(request), request.path_params["show"]))


async def show_orders(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    staff(request, show_id, "admin", "host")
    await ctx.shows.require(show_id)
    return JSONBody({"orders": await ctx.services.deals.orders_for_show(show_id)})


async def launch_deal(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    staff(request, show_id, "admin", "host")
    data = parse(DealIn, await json_body(request))
    deal = await ctx.services.deals.launch(show_id, data)
    return JSONBody(public_deal(deal) | {"show_id": show_id}, status_code=201)


async def get_deal(request: Request) -> Response:
    ctx = ctx_of(request)
    deal = await ctx.services.deals.get(request.path_params["deal"])
    if deal["show_id"] != request.path_params["show"]:
        raise NotFound("unknown deal")
    return JSONBody(public_deal(deal) | {"sold": deal["sold"], "end_reason": deal["end_reason"]})


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
                               field="Idempotency-Key")
    return key


async def claim_deal(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id, deal_id = request.path_params["show"], request.path_params["deal"]
    c = claims(request)
    c.require(show_id, "viewer", "host", "moderator", "admin")
    data = parse(ClaimIn, await json_body(request, optional=True))
    if ctx.settings.ban_blocks_claims and await ctx.services.moderation.is_banned(show_id, c.sub):
        raise Forbidden("banned users cannot claim", code_hint="banned")
    reservation = await ctx.services.deals.claim(show_id, deal_id, c.sub, data.qty,
                                                 idempotency_key(request))
    ctx.hub.note_claim(show_id)
    return JSONBody(reservation, status_code=201)


async def reservation_claims(request: Request) -> Claims:
    """The caller's token, which must be for the show the reservation's deal is
    in (the engine then checks that the caller holds the reservation)."""
    ctx = ctx_of(request)
    c = claims(request)
    deal_id = deal_of_reservation(request.path_params["reservation"])
    if c.show != "*":
        # The deal's show, cached per node: the same lookup a claim makes.
        static = await ctx.services.deals._deal_static(deal_id)
        if not c.can_act_on(static["show_id"]):
            raise Forbidden("token is for another show")
    return c


async def confirm_reservation(request: Request) -> Response:
    ctx = ctx_of(request)
    c = await reservation_claims(request)
    data = parse(ConfirmIn, await json_body(request))
    order = await ctx.services.deals.confirm(request.path_params["reservation"], c.sub, data.payment_ref)
    return JSONBody(order, status_code=201)


async def release_reservation(request: Request) -> Response:
    ctx = ctx_of(request)
    c = await reservation_claims(request)
    await ctx.services.deals.release(request.path_params["reservation"], c.sub)
    return Response(status_code=204)


async def moderation_log(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    staff(request, show_id, "admin", "host", "moderator")
    await ctx.shows.require(show_id)
    try:
        after = int(request.query_params.get("after", "0"))
        limit = min(200, max(1, int(request.query_params.get("limit", "50"))))
    except ValueError:
        raise ValidationFailed("after and limit must be integers") from None
    items, nxt = await ctx.services.moderation.audit(show_id, after=after, limit=limit)
    return JSONBody({"actions": items, "next": nxt})


async def set_faq(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    staff(request, show_id, "admin", "host")
    await ctx.shows.require(show_id)
    data = parse(FaqIn, await json_body(request))
    rule = await ctx.services.pool.fetchrow(
        "INSERT INTO faq_rules (show_id, patterns, answer, created_at) VALUES ($1,$2,$3,"
        " (extract(epoch from now())*1000)::bigint) RETURNING id, patterns, answer", show_id,
        data.patterns, data.answer)
    assert rule is not None
    ctx.hub.invalidate_faq(show_id)
    return JSONBody({"id": rule["id"], "patterns": list(rule["patterns"]), "answer": rule["answer"]},
                    status_code=201)


routes = [
    Route("/api/v1/tokens", create_token, methods=["POST"]),
    Route("/api/v1/products", create_product, methods=["POST"]),
    Route("/api/v1/products", list_products, methods=["GET"]),
    Route("/api/v1/products/{product}", get_product, methods=["GET"]),
    Route("/api/v1/shows", create_show, methods=["POST"]),
    Route("/api/v1/shows/{show}", get_show, methods=["GET"]),
    Route("/api/v1/shows/{show}/guest", guest_token, methods=["POST"]),
    Route("/api/v1/shows/{show}/orders", show_orders, methods=["GET"]),
    Route("/api/v1/shows/{show}/deals", launch_deal, methods=["POST"]),
    Route("/api/v1/shows/{show}/deals/{deal}", get_deal, methods=["GET"]),
    Route("/api/v1/shows/{show}/deals/{deal}/claims", claim_deal, methods=["POST"]),
    Route("/api/v1/shows/{show}/moderation", moderation_log, methods=["GET"]),
    Route("/api/v1/shows/{show}/faq", set_faq, methods=["POST"]),
    Route("/api/v1/reservations/{reservation}/confirm", confirm_reservation, methods=["POST"]),
    Route("/api/v1/reservations/{reservation}", release_reservation, methods=["DELETE"]),
]

__all__ = ["fingerprint", "routes"]
