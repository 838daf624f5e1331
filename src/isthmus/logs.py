"""Logging for bridge and edge: one line per event, each tagged with its request's id.

The bridge gives every request an id (``new_request_id``), returns it as ``X-Request-ID``
and sends it to the edge inside the request frame; both set ``request_id`` around the
work, so every log line about that request carries it, in text (``[req=…]``) or as a
JSON field (``--log-format json``).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import sys
import time
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

# The id of the request being served, or None outside one.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("isthmus_request_id", default=None)

# A client's own X-Request-ID is kept as a correlation label only when it looks like one.
_LABEL = re.compile(rb"^[A-Za-z0-9._:/@+=-]{1,128}$")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s%(request_tag)s"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                                  "request_tag", "request_id"}


_PREFIX = os.urandom(4).hex()  # this process's; the counter makes each id unique within it
_counter = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits: a random per-process prefix and a counter — unique across bridges and
    restarts in practice, never the caller's choice, and no system call per request."""
    return f"{_PREFIX}{next(_counter) & 0xFFFFFFFF:08x}"


def correlation_label(value: bytes | None) -> str | None:
    """A client's ``X-Request-ID`` when well-formed (≤128 safe characters), else None."""
    if value is None or not _LABEL.match(value):
        return None
    return value.decode("ascii")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``request_id``, ``request_tag``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or request_id.get()
        record.request_id = rid
        record.request_tag = f" [req={rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "info", fmt: LogFormat = "text") -> None:
    """Configure the root logger once for a bridge, edge or demo process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per relayed request is noise
