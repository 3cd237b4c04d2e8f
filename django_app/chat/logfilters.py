"""Log filter that keeps API tokens out of logs.

Tokens travel in the WebSocket query string (?token=...), so any log line that
echoes a URL (access logs, error reports) would leak a bearer credential.
"""
import logging
import re

TOKEN_RE = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return TOKEN_RE.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Attached to the handler so it also covers records from every library logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
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
