"""Errors of the dustpatrol application layer (settings, CLI, pipeline)."""


class DustpatrolError(Exception):
    """Base of errors raised by the ``dustpatrol`` package itself."""


class ConfigError(DustpatrolError):
    """A setting is missing, unknown or invalid."""
