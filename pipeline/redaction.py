"""Secrets never leave the process: the one redaction every message, log line, Dagster event,
metadata entry, HTTP body and command's output goes through when it may name a URL or a credential.

:func:`redact` replaces, in any text:

- the password of a URL's user information (``redis://user:SECRET@host`` → ``redis://user:***@host``;
  ``redis://:SECRET@host`` → ``redis://:***@host``);
- the value of a credential query parameter (``?password=``, ``token=``, ``key=``, ``secret=`` …);
- a bearer token after ``Bearer``;
- every value registered with :func:`register_secret` (a password or token given in a setting of
  its own), wherever it appears.

:class:`RedactingFilter` applies it to every record of a logger or handler. :func:`redact_value`
walks JSON-like values (dicts, lists) for metadata and status output.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"

# scheme://user:password@ — the password stops at the last '@' before the host (a password may hold '@'
# only percent-encoded, as URLs require); the user part may be empty (redis://:password@host).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>[^/?#\s@]+)(?=@)")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|pass|token|access_token|auth_token|api_key|apikey|key|secret"
    r"|client_secret|sig|signature)=)(?P<secret>[^&#\s'\"]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_MIN_REGISTERED = 4  # shorter values would mask ordinary words

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (a password or token from its own setting)."""
    if value and len(value) >= _MIN_REGISTERED:
        with _lock:
            _registered.add(value)


def redact(text: object) -> str:
    """``text`` (made a string) with every credential it holds replaced by ``***``."""
    result = str(text)
    for pattern in (_USERINFO, _QUERY, _BEARER):
        result = pattern.sub(lambda m: m.group("head") + MASK, result)
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in result:
            result = result.replace(secret, MASK)
    return result


def redact_value(value: Any) -> Any:
    """A JSON-like value with every string in it redacted (keys kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments merged in, and any traceback) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg, record.args = redact(message), None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches ``logger``'s handlers (default: the root logger's)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
