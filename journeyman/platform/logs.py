"""Logging for the worker, the API and `dev`, configured in one place.

Contract:
- `configure(settings.log_format)`: `text` (the default) is one readable line per
  record; `json` is one JSON object per line with `time` (UTC, ISO 8601), `level`,
  `logger`, `message`, `exception` when there is one, and inside an activity
  `workflow_id`, `run_id`, `activity_type` and `customer_id`.
- No personal data: customer ids only. Email addresses and phone numbers found in a
  message or a traceback are replaced by `[redacted]` in both formats, so a careless
  log call does not leak one.
- `ActivityLogContext` (a worker interceptor, journeyman/wiring.py) makes the
  customer id of an activity's input known to its log records.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from journeyman.messaging.journey_secrets import mask

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

_EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
# E.164, as phone numbers are stored and sent; bare digit runs would catch dates and ids.
_PHONE = re.compile(r"(?<![\w+])\+\d{8,15}\b")

_customer_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "journeyman_customer_id", default=None
)


def configure(
    log_format: str = "text",
    level: int = logging.INFO,
    stream: IO[str] | None = None,
    *,
    force: bool = False,
) -> logging.Handler | None:
    """Log to `stream` (else whatever `sys.stderr` is when a record is written) in
    `log_format` (`text` or `json`); returns the handler. Like `logging.basicConfig`,
    does nothing when the root logger has handlers already (a test runner's), unless
    `force`, which replaces them."""
    root = logging.getLogger()
    if root.handlers and not force:
        return None
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(ActivityFields())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class _Handler(logging.StreamHandler):
    """A stream handler that, given no stream, writes to the current `sys.stderr`, so
    that one replaced later (a test runner's capture) is never written to once closed."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream is not None

    def emit(self, record: logging.LogRecord) -> None:
        if not self._fixed:
            self.stream = sys.stderr
        super().emit(record)


def redact(text: str) -> str:
    """`text` with email addresses, phone numbers and webhook secrets replaced."""
    return mask(_PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, text)))


class ActivityFields(logging.Filter):
    """Adds the running activity's ids to each record made inside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if activity.in_activity():
            info = activity.info()
            record.workflow_id = info.workflow_id
            record.run_id = info.workflow_run_id
            record.activity_type = info.activity_type
            record.customer_id = _customer_id.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line; see the module's contract for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in ("workflow_id", "run_id", "activity_type", "customer_id"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class ActivityLogContext(Interceptor):
    """Makes the `customer_id` of an activity's input (our inputs are dataclasses that
    carry one) available to log records made while it runs, in its thread too."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CustomerIdInbound(next)


class _CustomerIdInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        ids = (getattr(arg, "customer_id", None) for arg in input.args)
        customer_id = next((value for value in ids if isinstance(value, str)), None)
        token = _customer_id.set(customer_id)
        try:
            return await super().execute_activity(input)
        finally:
            _customer_id.reset(token)
