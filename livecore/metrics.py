"""Prometheus metrics shared by the domain and the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLAIMS = Counter("livecore_claims_total", "Deal claims by outcome", ["outcome"])
ORDERS = Counter("livecore_orders_total", "Orders confirmed")
HTTP_REQUESTS = Counter("livecore_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("livecore_http_request_seconds", "HTTP request latency", ["route"])
CONNECTIONS = Gauge("livecore_connections", "Open WebSocket connections", ["role"])
FRAMES_IN = Counter("livecore_frames_in_total", "Frames received", ["type"])
FRAMES_OUT = Counter("livecore_frames_out_total", "Frames queued to clients")
DROPPED = Counter("livecore_dropped_frames_total", "Droppable frames skipped for slow clients")
SLOW_CLOSED = Counter("livecore_slow_clients_closed_total", "Clients closed for overflowing their queue")
FANOUT_DELAY = Histogram("livecore_fanout_delay_seconds", "Event ts to local enqueue",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
