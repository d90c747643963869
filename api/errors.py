"""Errors raised by `api`: each carries the HTTP status its problem response uses."""


class ApiError(Exception):
    """Base of every error raised by `api`; catch it to handle any of them."""

    status = 500
    title = "Internal error"


class NotFoundError(ApiError):
    status = 404
    title = "Not found"


class ConflictError(ApiError):
    status = 409
    title = "Conflict"


class ForbiddenError(ApiError):
    status = 403
    title = "Forbidden"


class AuthenticationError(ApiError):
    status = 401
    title = "Not authenticated"


class InvalidInputError(ApiError):
    status = 422
    title = "Invalid input"


class UnavailableError(ApiError):
    """Something the server needs is not installed or configured (an operator must act)."""

    status = 503
    title = "Service unavailable"


class TooManyRequestsError(ApiError):
    """Refused for now; ``retry_after`` says in how many seconds to try again."""

    status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
