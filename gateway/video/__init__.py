"""WHIP ingest and WHEP playback (filled in by the video work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from gateway.context import AppContext


class VideoService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.routes: list[BaseRoute] = []

    async def aclose(self) -> None:
        return None


def create_video_service(ctx: AppContext) -> VideoService:
    return VideoService(ctx)
