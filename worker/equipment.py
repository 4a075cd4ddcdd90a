"""Which camera took each photo, read from its EXIF.

Why: a session photographed with another phone or camera (or another lens of the same
phone) differs from the person's history for reasons that have nothing to do with the
person: another sensor, another lens, another colour pipeline. Reporting the equipment
next to the score lets a reader see that cause instead of guessing at it. This module only
describes what the photos' metadata says; it never judges what a difference means.

Where the data comes from: the EXIF Make and Model tags (IFD0) and LensModel (Exif IFD,
0x8769) of the opened image; pillow_heif exposes a HEIC's EXIF the same way once its opener
is registered. Photos without a make or model (screenshots, PNGs, edited exports, some
trail cameras) are "unknown", never "changed": missing metadata is not evidence of a new
device. Damaged EXIF never raises here; whatever can be read is returned.

Pixel dimensions: ``width``/``height`` are the photo's pixels as stored in the file, before
EXIF orientation is applied and before any JPEG draft reduction. ``Image.draft()`` discards
the original size, so call :func:`read` right after ``Image.open`` (before ``draft``), or
pass the original ``size`` explicitly. (libheif turns a HEIC upright while opening it, so a
HEIC's size is already as displayed.) Dimensions are reported, never compared.

What counts as the same device, and a change of it: ``schema.equipment``.
"""

from __future__ import annotations

from PIL import Image

from ..schema.equipment import Equipment, _dimension, _text

__all__ = ["Equipment", "read"]

EXIF_IFD = 0x8769
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_LENS_MAKE = 0xA433
TAG_LENS_MODEL = 0xA434


def read(image: Image.Image, size: tuple[int, int] | None = None) -> Equipment | None:
    """The photo's equipment, or None when its EXIF names neither a make nor a model.

    ``size`` overrides the image's own size; pass it when the image was already drafted
    (reduced) or transformed. Never raises on damaged metadata.
    """
    make = model = lens = None
    try:
        exif = image.getexif()
    except Exception:
        return None
    try:
        make = _text(exif.get(TAG_MAKE))
    except Exception:
        make = None
    try:
        model = _text(exif.get(TAG_MODEL))
    except Exception:
        model = None
    if make is None and model is None:
        return None
    try:
        lens = _text(exif.get_ifd(EXIF_IFD).get(TAG_LENS_MODEL))
    except Exception:
        lens = None
    try:
        width, height = size if size is not None else image.size
    except Exception:
        width = height = None
    return Equipment(make, model, lens, _dimension(width), _dimension(height))
