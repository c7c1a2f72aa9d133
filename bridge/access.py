"""Who may use the bridge: the browser's Origin on the WebSocket handshake, and an access token.

Starlette checks no Origin on WebSockets, so any web page a user visits could otherwise open
``ws://127.0.0.1:8080/ws`` from their browser. Browsers always send Origin; other clients (CLI,
benchmarks) send none, and Origin is no protection against them anyway: that is the token's job.
"""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from bridge.settings import BridgeSettings


def origin_allowed(connection: HTTPConnection, settings: BridgeSettings) -> bool:
    """Same origin as this server (by Host), or one of the configured origins; or no Origin."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in settings.origins:
        return True
    parts = urlsplit(origin)
    host = connection.headers.get("host", "")
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host


def presented_token(connection: HTTPConnection) -> str:
    """``Authorization: Bearer ...`` or, for browsers' WebSockets which cannot set headers, ``?token=``."""
    authorization = connection.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return connection.query_params.get("token", "")


def token_ok(connection: HTTPConnection, settings: BridgeSettings) -> bool:
    if not settings.token:
        return True
    return hmac.compare_digest(presented_token(connection).encode(), settings.token.encode())


# ?token=... in a URL (uvicorn logs "WebSocket /ws?token=..." at info level), and bearer
# credentials in headers (logged raw at uvicorn's trace level)
_SECRETS = re.compile(r"(token=)[^&\s\"'\\]+|(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
LOGGERS_THAT_SEE_REQUESTS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "<redacted>", text)


class RedactSecrets(logging.Filter):
    """A secret never reaches a log: the access token is replaced in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def redact_server_logs() -> None:
    """Install the filter on every logger through which uvicorn reports requests (once)."""
    for name in LOGGERS_THAT_SEE_REQUESTS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
