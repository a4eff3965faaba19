"""One JSON object per log line, so log shippers need no parsing rules.

Any line logged while a request is served carries that request's id, so an
auth failure or a status change can be matched with its request line.
"""

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# Set by taskmgmt.middleware.RequestLogMiddleware for the length of a request.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on a record when it is logged, not when it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class DisallowedHostFilter(logging.Filter):
    """Django logs a bad Host header as an ERROR with a traceback, but any client can
    send one: it is the client's mistake, so a WARNING, without the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        return True


class AnsweredErrorFilter(logging.Filter):
    """Django logs every 5xx answer a view returned (a 503 while the database or Redis
    is down) once more, after the request's own line and outside its request id. That
    line says nothing the request line does not, so only a record with a traceback passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is not None


# json.dumps(line, default=str) builds this encoder anew for every line.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            (key, value) for key, value in vars(record).items() if key not in _STANDARD_ATTRS
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line)
