"""Log filter that keeps API tokens out of logs.

Tokens travel in the WebSocket query string (?token=...), so any log line that
echoes a URL (access logs, error reports) would leak a bearer credential.
"""
import logging
import re

TOKEN_RE = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return TOKEN_RE.sub(r"\1[redacted]", text)


_TRACEBACKS = logging.Formatter()  # formats a record's traceback as every handler here would

# Attributes every LogRecord has; anything else on a record came in as `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactTokens(logging.Filter):
    """Attached to the handler so it also covers records from every library logger.

    The message, and the `extra=` attributes too: LOG_FORMAT=json writes every
    extra as a field, and Django's request log (django.request: every 4xx and
    5xx) passes the request, whose repr carries the query string. And the
    traceback: an exception's text can quote a URL. A traceback that carries a
    token is formatted here, redacted, and kept as the record's exc_text with
    exc_info cleared, which both the plain formatter and python-json-logger's
    (its exc_info field) then write as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key in [k for k in vars(record) if k not in _RECORD_FIELDS]:
            value = getattr(record, key)
            if isinstance(value, (int, float, bool, type(None))):
                continue
            try:
                text = str(value)
            except Exception:  # a filter that raises would fail the logging call itself
                continue
            if TOKEN_RE.search(text):
                setattr(record, key, redact(text))  # the formatter would write str(value) anyway
        if record.exc_info:
            try:
                trace = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            except Exception:  # an exception whose text cannot be printed: left to the formatter
                return True
            if TOKEN_RE.search(trace):
                record.exc_info, record.exc_text = None, redact(trace)
        elif record.exc_text and TOKEN_RE.search(record.exc_text):
            record.exc_text = redact(record.exc_text)
        return True


class RefusalWithoutTraceback(logging.Filter):
    """Bad client input (e.g. a foreign Host header) is a one-line warning, not a traceback.

    Django logs DisallowedHost with exc_info at ERROR; anyone on the internet can
    trigger it, so a stack trace per request would flood the log and hide real crashes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
