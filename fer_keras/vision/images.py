"""Image files decoded as a photo viewer shows them: uint8 gray for the classifier, RGB
for the face detectors that work on colour, BGR for the pictures `--annotate` draws on.

Any size, gray or colour; EXIF orientation is applied and transparency is composited over
white; gray of more than 8 bits is scaled to 8 (`to_uint8`). The suffixes taken from a
folder are `IMAGE_SUFFIXES`: the ones the FER2013 image-folder loader reads
(`fer_keras.data.sources.IMAGE_SUFFIXES`, decoded with OpenCV), plus GIF, which Pillow reads.
"""

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_keras.data.sources import IMAGE_SUFFIXES as FOLDER_IMAGE_SUFFIXES

IMAGE_SUFFIXES = FOLDER_IMAGE_SUFFIXES + (".gif",)
"""What predict takes from a folder: the data loader's suffixes, and GIF (Pillow decodes
photos here; OpenCV, which the data loader uses, cannot read GIF)."""

TRANSPARENT_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
"""Pillow modes with an alpha channel (a "P" image may have one too, as `transparency`)."""

FULL_SCALES = (255, 65535, 2**31 - 1)
"""The white levels of 8-bit, 16-bit and signed 32-bit integer gray images."""


def to_uint8(pixels, full_scale=None):
    """Scales a gray image of more than 8 bits (Pillow modes "I", "I;16", "F") to uint8.

    Pillow's own `convert("L")` clips such values at 255, so a 16-bit PGM or a 32-bit TIFF
    would decode as an all-white image. Here the image's full scale becomes 255.

    Args:
        pixels: integer or float array.
        full_scale: the value that is white, when the format states it (65535 for Pillow's
            16-bit modes). None reads it from the values, as Pillow's mode "I" holds 16-bit
            PGMs and 32-bit TIFFs alike: 1.0 for floats within 0-1, else the smallest of
            `FULL_SCALES` that holds the image's maximum.

    Returns:
        uint8 array of the same shape; values below 0 (and NaN) become black.
    """
    values = np.nan_to_num(np.asarray(pixels, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        top = float(values.max(initial=0.0))
        if np.issubdtype(np.asarray(pixels).dtype, np.floating) and top <= 1.0:
            full_scale = 1.0
        else:
            full_scale = next((scale for scale in FULL_SCALES if top <= scale), top)
    return np.round(np.clip(values, 0.0, full_scale) * (255.0 / full_scale)).astype(np.uint8)


def load_gray(path):
    """Decodes an image file to uint8 gray `(height, width)`, as a viewer would show it.

    EXIF orientation is applied and transparency is composited over white. Gray uses the
    ITU-R BT.601 weights (Pillow's and OpenCV's). Gray of more than 8 bits (16-bit PGM and
    PNG, 32-bit integer or float TIFF) is scaled to 8 bits by `to_uint8`.

    Raises:
        ValueError: if the file is not an image or is truncated or corrupt.
    """
    return _decode(path, colour=False)[0]


def load_rgb(path):
    """Decodes an image file to uint8 RGB `(height, width, 3)`, as `load_gray` sees it.

    The same EXIF orientation and compositing over white; gray files (of any bit depth)
    give their `load_gray` picture in all three channels.

    >>> load_rgb("photo_500x375.jpg").shape
    (375, 500, 3)

    Raises:
        ValueError: if the file is not an image or is truncated or corrupt.
    """
    return _decode(path, colour=True)[1]


def load_gray_and_rgb(path):
    """`(load_gray(path), load_rgb(path))`, decoding the file once.

    Raises:
        ValueError: if the file is not an image or is truncated or corrupt.
    """
    return _decode(path, colour=True)


def load_colour(path):
    """A photo as uint8 BGR (OpenCV's order, for drawing on), as `load_rgb` decodes it.

    Raises:
        ValueError: if the file is not an image or is truncated or corrupt.
    """
    return np.ascontiguousarray(load_rgb(path)[..., ::-1])


def _decode(path, colour):
    """`(gray, rgb)` of an image file; `rgb` is None unless `colour` (see `load_gray`)."""
    try:
        with Image.open(path) as image:
            # load() decodes every byte, so a truncated file fails here, not later.
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                gray = to_uint8(np.asarray(image),
                                65535 if image.mode.startswith("I;16") else None)
                return gray, (np.repeat(gray[..., None], 3, axis=-1) if colour else None)
            if image.mode in TRANSPARENT_MODES or (
                    image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8) if colour else None
            return gray, rgb
    except UnidentifiedImageError:
        raise ValueError("not an image (no known image format)") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"image too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError, SyntaxError or ValueError.
        raise ValueError(f"truncated or corrupt image: {error}") from None
