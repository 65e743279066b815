"""The OpenAPI document covers the analytics and webhook routes, and the
guide documents every setting. Needs the docs/openapi.yaml insertion."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway import http_analytics
from livecore.analytics import AnalyticsSettings
from livecore.webhooks import EVENTS, WebhookSettings

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


def test_openapi_covers_analytics_and_webhook_routes() -> None:
    spec = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for route in http_analytics.routes:
        if not route.path.startswith("/api/"):
            continue  # the report page
        for method in route.methods or ():
            if method != "HEAD":
                assert (route.path, method) in documented, f"{method} {route.path} missing from openapi.yaml"


def test_guide_documents_settings_and_events() -> None:
    guide = (DOCS / "analytics.md").read_text()
    for prefix, model in (("LIVECORE_ANALYTICS_", AnalyticsSettings), ("LIVECORE_WEBHOOK_", WebhookSettings)):
        for name in model.model_fields:
            assert f"{prefix}{name.upper()}" in guide, f"{prefix}{name.upper()} missing from docs/analytics.md"
    for event in EVENTS:
        assert f"`{event}`" in guide
