"""Errors raised by `geo`: frame metadata, georeferencing, site registries, matching."""


class GeoError(Exception):
    """Base of every error raised by `geo`; catch it to handle any of them."""
