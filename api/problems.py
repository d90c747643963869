"""RFC 9457 problem details: every error leaves the API as application/problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ApiError, TooManyRequestsError
from dustpatrol.storage import StorageError
from geo.errors import GeoError

PROBLEM_JSON = "application/problem+json"

# What a pattern-checked string should look like, in words: a validation error quotes this
# rather than the regular expression. Filled in where the pattern is declared.
PATTERN_MEANINGS: dict[str, str] = {}


def described_pattern(pattern: str, meaning: str) -> str:
    """Register the words for `pattern` (see PATTERN_MEANINGS) and return the pattern."""
    PATTERN_MEANINGS[pattern] = meaning
    return pattern


def _message(error: Any) -> str:
    meaning = PATTERN_MEANINGS.get((error.get("ctx") or {}).get("pattern", ""))
    if error.get("type") == "string_pattern_mismatch" and meaning:
        return f"should be {meaning}, not {error.get('input')!r}"
    return str(error["msg"])


def problem(status: int, title: str, detail: str, request: Request, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Translate our errors, geo errors, HTTP errors and validation errors in one place."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = problem(exc.status, exc.title, str(exc), request)
        if isinstance(exc, TooManyRequestsError):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # A value the schema let through but the database cannot hold (a number too large
        # for a 64-bit column, say): the client's input, so a 422, not a 500.
        return problem(
            422, "Invalid input", "a value is out of the range the database holds", request
        )

    @app.exception_handler(IntegrityError)
    async def _conflict(request: Request, exc: IntegrityError) -> JSONResponse:
        # A uniqueness rule of the database caught what the route's own check could not see:
        # the same thing created by another request at the same moment.
        return problem(
            409,
            "Conflict",
            "this conflicts with a record created at the same moment (the same name, or the "
            "same content posted twice); look it up or try again",
            request,
        )

    @app.exception_handler(StorageError)
    async def _storage_error(request: Request, exc: StorageError) -> JSONResponse:
        # The frame store (object storage) is down or refuses us: nothing of this request was
        # recorded, so the client may send it again later.
        response = problem(
            503, "Storage unavailable", f"{exc}; nothing was recorded, try again", request
        )
        response.headers["Retry-After"] = "30"
        return response

    @app.exception_handler(GeoError)
    async def _geo_error(request: Request, exc: GeoError) -> JSONResponse:
        return problem(422, "Unusable geodata", str(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"] if part != "body"),
                "message": _message(error),
            }
            for error in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, request, errors=errors)


def _title(status: int) -> str:
    return {
        400: "Bad request",
        401: "Not authenticated",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Content too large",
    }.get(status, "Error")


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation errors: the field and what is wrong with it",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def document_problems(app: FastAPI) -> None:
    """State in the OpenAPI schema what every operation may answer besides success: a
    problem+json for any 4xx (FastAPI's own 422 schema would describe a body we never send)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        problem_response = {
            "description": "a problem (RFC 9457): what is wrong and what to do",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                for code in [c for c in responses if c.startswith("4")]:
                    del responses[code]
                responses["4XX"] = problem_response
                if "503" in responses:
                    responses["503"] = {
                        **problem_response,
                        "description": responses["503"].get("description", "unavailable"),
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
