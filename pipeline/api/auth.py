"""The API's optional bearer token (``PIPELINE_API_TOKEN``; empty: no authentication).

With a token set, ``/recommend/*`` needs ``Authorization: Bearer <token>`` (compared in constant time),
else 401 with ``WWW-Authenticate: Bearer``; ``/health`` without it answers only whether the server is
ready. The scheme is declared in the OpenAPI document (HTTPBearer), so Swagger UI's Authorize button
sends it. The token is registered with :func:`pipeline.redaction.register_secret`: it is masked if it
ever reaches a message.
"""

# no "from __future__ import annotations": FastAPI reads the dependencies' annotations, which name closures
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.redaction import register_secret

_MIN_LENGTH = 16  # a shorter token is guessable: refused at start


class ApiToken:
    """The configured token and the FastAPI dependencies that check it."""

    def __init__(self, token: str = ""):
        token = token.strip()
        if token and len(token) < _MIN_LENGTH:
            raise ValueError(f"PIPELINE_API_TOKEN must be at least {_MIN_LENGTH} characters (it is {len(token)})")
        register_secret(token)
        self._token = token.encode()
        self.scheme = HTTPBearer(auto_error=False, scheme_name="bearer",
                                 description="PIPELINE_API_TOKEN, as Authorization: Bearer <token>")

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def accepts(self, credentials: HTTPAuthorizationCredentials | None) -> bool:
        """True when no token is configured, or ``credentials`` carry it (constant-time comparison)."""
        if not self._token:
            return True
        if credentials is None or credentials.scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.credentials.encode(), self._token)

    def required(self) -> list:
        """Route dependencies: 401 unless the request carries the token (none when no token is set)."""
        if not self.enabled:
            return []

        def require(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(self.scheme)]) -> None:
            if not self.accepts(credentials):
                raise HTTPException(401, "a valid API token is required (header Authorization: Bearer <token>)",
                                    headers={"WWW-Authenticate": "Bearer"})

        return [Depends(require)]

    def declared(self) -> list:
        """Route dependencies that only declare the scheme (the route checks :meth:`sent_by` itself)."""
        return [Depends(self.scheme)] if self.enabled else []

    def sent_by(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the token (always, when no token is set)."""
        scheme, _, credentials = (authorization or "").partition(" ")
        return self.accepts(HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials.strip())
                            if authorization else None)
