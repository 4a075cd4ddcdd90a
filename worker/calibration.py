"""The photos INT8 calibration sees: drawn in memory, the same on every machine.

Static INT8 fixes each activation's range once, from what calibration shows the model.
The set must therefore be the same wherever a worker is built (a fleet's artifacts and
CI's agree) and must not depend on files outside the package, so it is drawn here from a
seed: lit gradients, overlapping shapes, fine texture, blur and sensor noise, over the
brightness range real photos span. Its name (``CALIBRATION``) is part of an INT8 model
id: a different set gives different ranges, so different scores.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .decode import INPUT_SIZE

# Bump when the drawing below changes: INT8 model ids name it (worker.int8).
CALIBRATION = "cal1"
CALIBRATION_IMAGES = 48
_SEED = 24


def _scene(rng: np.random.Generator) -> Image.Image:
    side = INPUT_SIZE
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, side)[:, None, None]
    sky = (top * (1 - ramp) + bottom * ramp).repeat(side, axis=1)
    image = Image.fromarray(sky.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 24))):
        x0, y0 = rng.integers(-40, side, 2)
        x1, y1 = x0 + rng.integers(8, 160), y0 + rng.integers(8, 160)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 8)))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 2.5))))
    pixels = np.asarray(image, dtype=np.float32)
    # Texture and noise (skin, fabric, a sensor), then a global exposure.
    pixels += rng.normal(0.0, float(rng.uniform(2.0, 14.0)), pixels.shape)
    pixels *= float(rng.uniform(0.35, 1.3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def calibration_images(count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """(count, 224, 224, 3) uint8 RGB, the model's input as the decode stage gives it."""
    rng = np.random.default_rng(_SEED)
    return np.stack([np.asarray(_scene(rng)) for _ in range(count)])
