"""Images over HTTP: generated images out as base64 PNG, retouch uploads in from base64.

Uploads are untrusted. ``decode_upload`` checks, in this order and before PIL decodes any
pixel: the base64 text, the byte count, the file format (PNG, JPEG or WebP, read from the
file's own header), and the pixel count and side lengths from that header. Only then are
the pixels decoded. Every problem becomes an ``UploadError`` whose message is a sentence
for a person, so a bad upload is a 422 and never a traceback or a memory spike.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
"""Formats a retouch upload may have (checked from the file header, not the name)."""
MIN_UPLOAD_SIDE = 64
"""Smallest width or height of an upload in pixels (the smallest image a worker makes)."""
PNG_COMPRESS_LEVEL = 3
"""zlib level for result PNGs: much faster than the default 6, a few percent larger."""


class UploadError(ValueError):
    """An upload that cannot be used; the message says why, for a person."""


def encode_png(image: Image.Image) -> str:
    """Encode ``image`` as a base64 PNG (ASCII, no data-URL prefix)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode base64 text, tolerating a ``data:image/...;base64,`` prefix and line breaks."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise UploadError("a data URL must be base64-encoded (data:image/png;base64,...)")
    compact = "".join(text.split())
    if not compact:
        raise UploadError("the image is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UploadError(f"not valid base64 ({exc})") from None


def decode_upload(text: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode and check a base64 PNG/JPEG/WebP upload; return it as an RGB image.

    Raises ``UploadError`` when the text is not base64, the file is larger than
    ``max_bytes``, not a PNG/JPEG/WebP image, larger than ``max_pixels`` pixels, smaller
    than ``MIN_UPLOAD_SIDE`` on a side, or truncated/corrupt.
    """
    data = decode_base64(text)
    if len(data) > max_bytes:
        raise UploadError(f"the file has {len(data)} bytes, more than the {max_bytes}-byte limit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(f"the image has too many pixels (at most {max_pixels})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise UploadError("not a PNG, JPEG or WebP image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise UploadError(f"the image is {width}x{height} = {width * height} pixels, more than the {max_pixels}-pixel limit")
    if min(width, height) < MIN_UPLOAD_SIDE:
        raise UploadError(f"the image is {width}x{height}; both sides must be at least {MIN_UPLOAD_SIDE} pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(f"the image is truncated or corrupt ({exc})") from None
