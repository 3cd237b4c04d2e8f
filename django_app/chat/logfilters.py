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
