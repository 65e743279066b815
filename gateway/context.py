"""What every request handler can reach: settings, domain services, the hub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livecore.services import Services

if TYPE_CHECKING:
    from gateway.hub import Hub
    from gateway.video import VideoService


@dataclass
class AppContext:
    services: Services
    node_id: str
    hub: Hub = field(init=False)
    video: VideoService | None = None
    on_ingest_change: Callable[[str, bool], Awaitable[None]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Any:
        return self.services.settings

    @property
    def tokens(self) -> Any:
        return self.services.tokens

    @property
    def shows(self) -> Any:
        return self.services.shows
