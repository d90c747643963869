"""Logging for the service and the workers: text for people, or one JSON object a line for a
log collector, each carrying the id of the request or job it was written for.

``log_context(request_id=...)`` binds fields to everything logged inside it (in this thread
or task); the JSON formatter adds them to each record, the text one appends them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from dustpatrol.settings import LogSettings

_context: ContextVar[dict[str, Any] | None] = ContextVar("dustpatrol_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (as ``record.context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = current_context()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the bound fields
    (request_id, job_id, ...) and the exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(getattr(record, "context", None) or current_context())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "context", None) or current_context()
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def formatter(settings: LogSettings) -> logging.Formatter:
    return JsonFormatter() if settings.format == "json" else TextFormatter()


def configure_logging(settings: LogSettings) -> None:
    """Route the root logger (and uvicorn's and Celery's, which propagate to it) to stderr in
    the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def uvicorn_log_config(settings: LogSettings) -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers through ours (uvicorn applies it in every
    server process it starts)."""
    kind = (
        "dustpatrol.logs.JsonFormatter"
        if settings.format == "json"
        else ("dustpatrol.logs.TextFormatter")
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "dustpatrol.logs.ContextFilter"}},
        "formatters": {"main": {"()": kind}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": settings.level},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": settings.level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
