"""JSON structured logs (one object per line), secrets never included."""

from __future__ import annotations

import logging
import re
import sys

import orjson

from livecore.settings import Settings

_TOKEN = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": int(record.created * 1000), "level": record.levelname.lower(),
                 "logger": record.name, "msg": _TOKEN.sub("[token]", record.getMessage())}
        for key in ("request_id", "conn_id", "show_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
