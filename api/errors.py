"""Errors raised by `api`: the notice service."""


class ApiError(Exception):
    """Base of every error raised by `api`; catch it to handle any of them."""
