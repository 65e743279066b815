"""JSON structured logs (one object per line), secrets never included."""

from __future__ import annotations

import logging
import re
import sys

import orjson

from livecore.settings import Settings

_TOKEN = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
# A token in a query string (`?token=…`), e.g. a client that put it in the socket URL.
_QUERY_TOKEN = re.compile(r"([?&](?:access_)?token=)[^&\s'\"]+", re.IGNORECASE)
# An Authorization header in a debug dump of a socket upgrade request.
_BEARER = re.compile(r"(authorization:\s*(?:bearer|basic)\s+)[^\s'\",]+", re.IGNORECASE)
# uvicorn's and websockets' debug dumps of socket frames (`< TEXT '…' [326 bytes]`): a
# hello carries a token, and the dump's `...` cut can leave any part of it visible.
_FRAME_DUMP = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*?( \[\d+ bytes(?:, continued)?\])?$", re.DOTALL)


def mask(text: str) -> str:
    text = _TOKEN.sub("[token]", text)
    text = _QUERY_TOKEN.sub(r"\1[token]", text)
    text = _BEARER.sub(r"\1[token]", text)
    return _FRAME_DUMP.sub(lambda m: f"{m.group(1)} [redacted]{m.group(2) or ''}", text)


class MaskTokens(logging.Filter):
    """Rewrites a record's message (and traceback) with tokens masked. Attached to
    loggers whose handlers we do not own (uvicorn installs its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


class ClientFaults(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 frame as an ERROR with a traceback:
    any client could flood the error log at will. It is the client's fault and
    the socket is closed 1007, so it becomes a one-line warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith("Invalid UTF-8 sequence"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": int(record.created * 1000), "level": record.levelname.lower(),
                 "logger": record.name, "msg": mask(record.getMessage())}
        for key in ("request_id", "conn_id", "show_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(MaskTokens())
    root = logging.getLogger()
    root.handlers = [handler]
    level = settings.log_level.upper()
    # uvicorn's "trace" (5) is below DEBUG; logging itself does not know the name.
    root.setLevel(5 if level == "TRACE" else level)
    # uvicorn configures its loggers (and handlers) after us; logger filters
    # survive that, and these loggers log the socket URLs and frame dumps.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "websockets"):
        logging.getLogger(name).addFilter(MaskTokens())
    logging.getLogger("uvicorn.error").addFilter(ClientFaults())
