"""Domain randomisation for training images: what differs between cameras, days and files.

Applied once when a dataset is written (training adds its own flips, mosaics and HSV jitter
on top). The ranges are wide on purpose: a model trained on renders must not rely on their
exact colours, sharpness or noise. Geometry is never changed here, so labels stay exact.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

UInt8Image = NDArray[np.uint8]


# How far a picture's white balance strays along the warm-cool axis: red over blue up to
# 1.27 or down to 0.79 (the log of each gain drawn within +-WARMTH). Cameras and their
# automatic white balance differ that much between days and makes. It was a small cast of
# each channel (5 %): the shipped model then took the warmth of earth for its class. Real
# photos of a site, made 10 % warmer in red and 10 % cooler in blue, had their exposed soil
# found at IoU 0.42 instead of 0.22, and called road dust 7 % of the time instead of 21 %.
# A fine-tune on data with this cast (sim-v20a, the model card) did not lose that lean (0.58
# warmer, 0.11 cooler): whatever tells soil from dust in the renders, it is not the cast alone.
# `train dataset --warmth` sets another range for a dataset.
WARMTH = 0.12


def white_balance(rng: np.random.Generator, warmth: float = WARMTH) -> NDArray[np.float32]:
    """Gains for the blue, green and red channels of one picture: a colour temperature (red
    up and blue down, or the reverse, the log of each gain within +-``warmth``), a slight
    green-magenta tint and a little of each."""
    warmth = float(rng.uniform(-warmth, warmth))
    tint = float(rng.normal(0.0, 0.02))
    gains: NDArray[np.float64] = np.exp(np.array([-warmth, tint, warmth]))
    return (gains * rng.normal(1.0, 0.01, size=3)).astype(np.float32)


def randomise(
    image_bgr: UInt8Image, rng: np.random.Generator, warmth: float = WARMTH
) -> UInt8Image:
    """A randomly altered copy of ``image_bgr``: tone curve, colour (the white balance's
    warm-cool range ``warmth``, see `white_balance`), blur or sharpening, noise, JPEG."""
    image = image_bgr.astype(np.float32) / 255.0
    # Overcast, dull pictures one time in four: gamma, exposure, contrast. (At 0.4, with
    # saturation cut further here on top of the renders' picture style, the training set's
    # colours sat far below real photos'; the shipped model found more real soil in photos
    # turned grey than in the photos themselves.)
    dull = rng.random() < 0.25
    gamma = rng.uniform(1.0, 1.6) if dull else rng.uniform(0.75, 1.25)
    exposure = rng.uniform(0.55, 0.9) if dull else rng.uniform(0.85, 1.2)
    contrast = rng.uniform(0.6, 0.95) if dull else rng.uniform(0.85, 1.2)
    image = np.power(np.clip(image, 0.0, 1.0), gamma) * exposure
    image = 0.5 + (image - 0.5) * contrast
    # Saturation about the grey of each pixel, and a white-balance cast.
    saturation = rng.uniform(0.4, 0.9) if dull else rng.uniform(0.75, 1.35)
    grey = image @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
    image = grey[:, :, None] + (image - grey[:, :, None]) * saturation
    image *= white_balance(rng, warmth)
    out = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # Optics and processing: defocus, motion blur, or the camera's own sharpening (an unsharp
    # mask; real JPEGs carry more fine contrast than renders).
    roll = rng.random()
    if roll < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.4)))
    elif roll < 0.5:
        soft = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.8, 2.0)))
        amount = float(rng.uniform(0.3, 1.0))
        out = cv2.addWeighted(out, 1.0 + amount, soft, -amount, 0.0)
    elif roll < 0.62:
        length = int(rng.integers(2, 6))
        kernel = np.zeros((length, length), dtype=np.float32)
        if rng.random() < 0.5:
            kernel[length // 2, :] = 1.0
        else:
            kernel[:, length // 2] = 1.0
        out = cv2.filter2D(out, -1, kernel / kernel.sum())
    # Sensor noise.
    if rng.random() < 0.5:
        sigma = rng.uniform(1.0, 6.0)
        noise = rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    # Compression.
    quality = int(rng.integers(45, 96))
    ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        if decoded is not None:
            out = decoded
    return np.ascontiguousarray(out, dtype=np.uint8)
