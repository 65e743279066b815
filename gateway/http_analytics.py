"""Show analytics and webhook endpoints (docs/analytics.md), the report page,
and the background tasks behind them (analytics flusher, webhook worker)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, StrictStr
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.context import AppContext
from gateway.errors import JSONBody
from gateway.http_api import ctx_of, json_body, staff
from livecore.analytics import CSV_PARTS, RECORDER, AnalyticsSettings, show_analytics, to_csv
from livecore.errors import NotFound, ValidationFailed
from livecore.models import Body, parse
from livecore.webhooks import WebhookSettings, WebhookStore, WebhookWorker

REPORT_PAGE = Path(__file__).parent / "pages" / "report.html"
DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class WebhookIn(Body):
    url: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    events: Annotated[list[StrictStr], Field(min_length=1, max_length=20)]
    secret: Annotated[StrictStr, Field(min_length=16, max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=200)] | None = None


def webhook_settings(ctx: AppContext) -> WebhookSettings:
    settings = ctx.extras.get("webhook_settings")
    if not isinstance(settings, WebhookSettings):
        settings = WebhookSettings()
        ctx.extras["webhook_settings"] = settings
    return settings


def int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise ValidationFailed(f"{name} must be between {lo} and {hi}", field=name)
    return value


# ---------------------------------------------------------------- analytics

async def get_analytics(request: Request) -> Response:
    ctx = ctx_of(request)
    show_id = request.path_params["show"]
    staff(request, show_id, "admin", "host")
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ValidationFailed("format must be json or csv", field="format")
    part = request.query_params.get("part", "series")
    if part not in CSV_PARTS:
        raise ValidationFailed(f"part must be one of {', '.join(CSV_PARTS)}", field="part")
    report = await show_analytics(ctx.services.pool, show_id)
    if report is None:
        raise NotFound("unknown show")
    headers = {"cache-control": "no-store"}
    if fmt == "json":
        return JSONBody(report, headers=headers)
    filename = _SAFE.sub("_", f"show-{show_id}-{part}.csv")
    return Response(to_csv(report, part), media_type="text/csv; charset=utf-8",
                    headers={**headers, "content-disposition": f'attachment; filename="{filename}"'})


async def report_page(request: Request) -> Response:
    from gateway.app import PAGE_CSP  # the pages' one policy (import here: app imports us)

    return FileResponse(REPORT_PAGE, headers={"content-security-policy": PAGE_CSP,
                                              "x-frame-options": "DENY", "cache-control": "no-cache"})


# ---------------------------------------------------------------- webhooks

def store(request: Request) -> WebhookStore:
    return WebhookStore(ctx_of(request).services.pool)


def admin(request: Request) -> None:
    # Endpoints receive events of every show: only a global admin manages them.
    staff(request, "*", "admin")


async def create_webhook(request: Request) -> Response:
    admin(request)
    data = parse(WebhookIn, await json_body(request))
    allow_private = webhook_settings(ctx_of(request)).allow_private
    endpoint = await store(request).create(data.url, data.events, data.secret, data.description,
                                           allow_private=allow_private)
    return JSONBody(endpoint, status_code=201)


async def list_webhooks(request: Request) -> Response:
    admin(request)
    return JSONBody({"webhooks": await store(request).all()})


async def get_webhook(request: Request) -> Response:
    admin(request)
    return JSONBody(await store(request).get(request.path_params["webhook"]))


async def delete_webhook(request: Request) -> Response:
    admin(request)
    await store(request).disable(request.path_params["webhook"])
    return Response(status_code=204)


async def webhook_deliveries(request: Request) -> Response:
    admin(request)
    status = request.query_params.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(DELIVERY_STATUSES)}", field="status")
    before = int_param(request, "before", None, 1, 2**62)
    limit = int_param(request, "limit", 50, 1, 200)
    assert limit is not None
    items, nxt = await store(request).deliveries(request.path_params["webhook"], before=before,
                                                 limit=limit, status=status)
    return JSONBody({"deliveries": items, "next": nxt})


routes = [
    Route("/api/v1/shows/{show}/analytics", get_analytics, methods=["GET"]),
    Route("/api/v1/webhooks", create_webhook, methods=["POST"]),
    Route("/api/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook}", get_webhook, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook}", delete_webhook, methods=["DELETE"]),
    Route("/api/v1/webhooks/{webhook}/deliveries", webhook_deliveries, methods=["GET"]),
    Route("/host/report", report_page, methods=["GET"]),
]


# ---------------------------------------------------------------- background tasks

@dataclass
class Background:
    worker: WebhookWorker | None

    async def stop(self) -> None:
        """After the hub has let go of its sockets: last analytics flush, worker stop."""
        if self.worker is not None:
            await self.worker.stop()
        await RECORDER.stop()


def start_background(ctx: AppContext) -> Background:
    """Start recording analytics and (unless LIVECORE_WEBHOOK_WORKER=false) delivering webhooks."""
    pool = ctx.services.pool
    RECORDER.start(pool, ctx.node_id, AnalyticsSettings())
    settings = webhook_settings(ctx)
    worker = WebhookWorker(pool, settings, ctx.node_id) if settings.worker else None
    if worker is not None:
        worker.start()
    return Background(worker)
