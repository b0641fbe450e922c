"""Every error the API answers is a JSON body (:class:`~pipeline.api.schemas.ErrorBody`): the
message, the offending field where there is one, the details of a validation failure. Messages
are made public (:func:`~pipeline.api.public.public_text`: no warehouse paths, no secrets).

The handlers map what FastAPI and Starlette raise: malformed JSON → 400, a field failing its
schema → 422 naming it; a body that cannot be decoded (400), too large (413) or too slow (408),
an unknown path or method, a missing token (401) → their status; anything unexpected → 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.api.public import public_text


def error_response(status: int, message: str, root: Path, field: str | None = None, detail: list | None = None,
                   retry_after: int | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error body, with ``Retry-After`` when ``retry_after`` is given; paths under ``root``
    are not named."""
    body = {"error": public_text(message, root), **({"field": field} if field else {}),
            **({"detail": detail} if detail else {})}
    headers = {**(headers or {}), **({"Retry-After": str(retry_after)} if retry_after else {})}
    return JSONResponse(body, status_code=status, headers=headers or None)


def field_name(loc: tuple) -> str:
    """A validation error's location as a dotted field name (``candidate_restaurant_ids.1``; ``body``)."""
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


def _root(request: Request) -> Path:
    return request.app.state.api.root


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"field": field_name(e["loc"]), "message": e["msg"]} for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return error_response(400, "malformed JSON", _root(request), "body")
    return error_response(422, f"invalid {problems[0]['field']}: {problems[0]['message']}", _root(request),
                          problems[0]["field"], problems)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), _root(request),
                          "body" if exc.status_code in (400, 408, 413) else None, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # the traceback is logged by the server; the client gets JSON, never a bare text 500
    return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details",
                          _root(request))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a JSON body (``app.state.api.root`` names the warehouse)."""
    # Starlette types every handler as taking Exception, though it passes the class it was registered for
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
