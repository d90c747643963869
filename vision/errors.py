"""Errors raised by `vision`: the detector, tiled inference, datasets, training and export."""


class VisionError(Exception):
    """Base of every error raised by `vision`; catch it to handle any of them."""
