"""Detection: ``Detections``, the detector interface, tiled inference, datasets and training.

A leaf package: it never imports ``geo``. Its only output type is ``vision.Detections``.
"""

from vision.errors import VisionError

__all__ = ["VisionError"]
