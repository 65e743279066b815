"""The API documents parse and cover every route and socket command the code has."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway import http_api
from livecore import protocol

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_openapi_covers_every_http_route() -> None:
    spec = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for route in http_api.routes:
        for method in route.methods or ():
            if method == "HEAD":
                continue
            assert (route.path, method) in documented, f"{method} {route.path} missing from openapi.yaml"


def test_asyncapi_lists_every_command() -> None:
    text = (DOCS / "asyncapi.yaml").read_text()
    yaml.safe_load(text)
    for command in protocol.ALL_COMMANDS:
        assert command in text, f"{command} missing from asyncapi.yaml"
