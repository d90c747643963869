"""The notice service (FastAPI): sites, flights, findings, notices, bureaus and the map."""

from api.errors import ApiError

__all__ = ["ApiError"]
