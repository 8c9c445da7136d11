"""Structured JSON logs: one object per line with the component, the request id and the trace and span ids of the
span that was current when the line was written, so a log line leads to its trace (`sluice trace <id>`) and back.

Levels are set per component from one string (SLUICE_LOG_LEVEL): a default level and `component=level` overrides,
e.g. `info,orchestrator=debug,safety=warning`. User text never belongs in a log line: log ids, counts and hashes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

# The request being served on this task: set by the telemetry server interceptor (x-request-id), read by every log line.
current_request_id: ContextVar[str | None] = ContextVar("sluice_request_id", default=None)

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

# LogRecord attributes that are not `extra=` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def level_for(spec: str, component: str) -> int:
    """The level `spec` gives `component`: its own `component=level` entry, else the bare default, else INFO."""
    default, own = logging.INFO, None
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, level = part.rpartition("=")
        name, level = name.strip(), level.strip()
        if level.lower() not in LEVELS:
            raise ValueError(f"unknown log level {level!r} in {spec!r} (use one of {', '.join(sorted(LEVELS))})")
        if not name:
            default = LEVELS[level.lower()]
        elif name == component:
            own = LEVELS[level.lower()]
    return own if own is not None else default


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": current_request_id.get(),
            "trace_id": None,
            "span_id": None,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(component: str, spec: str = "info", stream: Any = None) -> logging.Handler:
    """Makes every log line of this process a JSON object on `stream` (stderr), at the component's level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level_for(spec, component))
    logging.captureWarnings(True)  # Python warnings become JSON lines too
    return handler
