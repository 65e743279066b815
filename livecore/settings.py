"""All configuration in one typed object, read once from the environment.

Every field maps to `LIVECORE_<NAME>`; `docs/configuration.md` is generated
from this class (`python -m livecore.settings_doc`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVECORE_", env_file=".env", extra="ignore")

    redis_url: str | None = Field(None, description="Redis URL. Unset: `livecore up` starts an embedded server.")
    database_url: str | None = Field(None, description="PostgreSQL DSN. Unset: `livecore up` starts an embedded server.")
    secret: str = Field("dev-insecure-secret-change-me-0123456789", description="HMAC key for signing tokens (HS256).")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, description="Bind port.")
    public_url: str | None = Field(None, description="Base URL printed in links; defaults to http://host:port.")
    node_id: str | None = Field(None, description="Gateway node id; random when unset.")
    redis_prefix: str = Field("lc", description="Prefix of every Redis key (lets tests and tenants share a server).")

    max_frame_bytes: int = Field(65536, description="Largest accepted WebSocket frame; larger closes with 1009.")
    max_body_bytes: int = Field(1_048_576, description="Largest accepted HTTP body; larger answers 413.")
    header_timeout_s: float = Field(10.0, description="Seconds a client has to send complete HTTP request headers (slowloris guard); then 408 and the connection is closed.")
    hello_timeout_s: float = Field(5.0, description="Seconds a socket may wait before sending hello (then 4408).")
    send_queue_max: int = Field(1024, description="Outgoing frames buffered per connection before it is closed 1013.")
    history_max: int = Field(1000, description="Events kept per show in the Redis history stream (approximate).")
    batch_window_ms: int = Field(0, ge=0, le=100, description="Group events into batch frames within this window, at most 100 ms (0 = adaptive: events that piled up while the last read was fanned out go out together).")
    tick_interval_s: float = Field(1.0, description="Interval of deal.tick frames.")
    viewers_interval_s: float = Field(2.0, description="Interval of coalesced viewers frames.")
    reactions_interval_s: float = Field(1.0, description="Aggregation window of reactions frames.")
    stats_interval_s: float = Field(1.0, description="Interval of host stats frames.")
    presence_ttl_s: float = Field(6.0, description="A node's presence entry counts this long after its last heartbeat.")
    ws_deflate: bool = Field(False, description="Offer permessage-deflate. Off by default: it compresses every frame once per viewer (−38 % CPU per frame and −45 KB per connection when off, docs/fanout.md).")
    ws_ping_interval_s: float = Field(20.0, description="Server keepalive ping interval (0 = off); a client that does not pong in as long again is closed.")
    drain_s: float = Field(5.0, description="Graceful shutdown: seconds to drain before exit.")

    default_hold_ttl_s: int = Field(120, description="Default reservation hold TTL.")
    sweep_interval_s: float = Field(0.5, description="Interval of the hold-expiry sweeper.")
    idempotency_ttl_s: int = Field(86_400, description="How long Idempotency-Key results are kept.")
    claim_batch_window_ms: float = Field(0.0, description="Claim micro-batching on one node: 0 = adaptive (send now when Redis is idle, batch while a batch is in flight), > 0 = fixed window in ms, < 0 = off.")

    chat_rate_per_s: float = Field(1.0, description="Per-user chat token-bucket refill rate.")
    chat_burst: int = Field(5, description="Per-user chat token-bucket size.")
    frame_rate_per_s: float = Field(20.0, description="Per-connection frame token-bucket refill rate.")
    frame_burst: int = Field(40, description="Per-connection frame token-bucket size.")
    flood_strikes: int = Field(20, description="Rate-limited frames tolerated before closing 4429.")
    ban_blocks_claims: bool = Field(True, description="Banned users cannot claim deals.")
    hold_links: bool = Field(True, description="Hold chat messages containing links for review.")
    max_connections: int = Field(50_000, description="Per-process socket limit (excess closes 1013).")
    max_connections_per_ip: int = Field(20_000, description="Per-IP socket limit (excess closes 1013).")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (closed by default).")

    guest_ttl_s: int = Field(3600, description="Lifetime of guest viewer tokens.")
    max_whep_sessions: int = Field(200, description="Max WHEP viewers per process (excess 503).")
    ice_servers: list[str] = Field(default_factory=list, description="STUN/TURN URLs for WebRTC.")
    video_relay: Literal["forward", "transcode"] = Field("forward", description="WHEP relay mode: forward encoded frames (cheap) or MediaRelay transcode per viewer.")
    log_json: bool = Field(True, description="JSON structured logs.")
    log_level: str = Field("info", description="Log level.")

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
