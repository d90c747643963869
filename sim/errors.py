"""Errors raised by `sim`: the simulated district, camera and vehicle."""


class SimError(Exception):
    """Base of every error raised by `sim`; catch it to handle any of them."""
