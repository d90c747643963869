"""Errors raised by `missions`: patrol planning, mission files and flight execution."""


class MissionError(Exception):
    """Base of every error raised by `missions`; catch it to handle any of them."""
