"""Images over HTTP: generated images out as base64 PNG, retouch uploads in from base64.

Uploads are untrusted. ``check_upload`` checks, in this order and before PIL decodes any
pixel: the byte count, the file format (PNG, JPEG or WebP, read from the file's own
header), and the pixel count and side lengths from that header. ``decode_upload`` (the
worker's base64 uploads, after checking the base64 text) and ``read_upload`` (the web
front's uploaded files) run it, and only then decode the pixels. Every problem becomes an
``UploadError`` whose message is a sentence for a person, so a bad upload is a 422 or a
readable error, never a traceback or a memory spike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from collections.abc import Mapping

from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
"""Formats a retouch upload may have (checked from the file header, not the name)."""
MIN_UPLOAD_SIDE = 64
"""Smallest width or height of an upload in pixels (the smallest image a worker makes)."""
PNG_COMPRESS_LEVEL = 3
"""zlib level for result PNGs: much faster than the default 6, a few percent larger."""


class UploadError(ValueError):
    """An upload that cannot be used; the message says why, for a person."""


def encode_png(image: Image.Image, text: Mapping[str, str] | None = None) -> str:
    """Encode ``image`` as a base64 PNG (ASCII, no data-URL prefix), with ``text`` as UTF-8 ``iTXt`` chunks."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=info)
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


def upload_sha256(text: str) -> str:
    """The SHA-256 (hex) of a base64 upload's bytes: what a retouch result's recipe names as its photo."""
    return hashlib.sha256(decode_base64(text)).hexdigest()


def check_upload(source: bytes | str | os.PathLike[str], max_bytes: int, max_pixels: int) -> Image.Image:
    """Check an upload (file bytes, or the path of a file) from its size and header alone.

    Returns the image opened lazily: no pixel is decoded yet (``load_upload`` does that).
    Raises ``UploadError`` when the file is larger than ``max_bytes``, not a PNG/JPEG/WebP
    image, larger than ``max_pixels`` pixels or smaller than ``MIN_UPLOAD_SIDE`` on a side.
    No message contains the file's path.
    """
    try:
        size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
    except OSError:
        raise UploadError("the file could not be read") from None
    if size > max_bytes:
        raise UploadError(f"the file has {size} bytes, more than the {max_bytes}-byte limit")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's guard (guard_decoding)
        raise UploadError(f"the image has too many pixels, more than the {max_pixels}-pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError("not a PNG, JPEG or WebP image") from None
    width, height = image.size
    problem = None
    if width * height > max_pixels:
        problem = f"the image is {width}x{height} = {width * height} pixels, more than the {max_pixels}-pixel limit"
    elif min(width, height) < MIN_UPLOAD_SIDE:
        problem = f"the image is {width}x{height}; both sides must be at least {MIN_UPLOAD_SIDE} pixels"
    if problem:
        image.close()
        raise UploadError(problem)
    return image


def load_upload(image: Image.Image) -> Image.Image:
    """Decode a checked upload (``check_upload``): upright (EXIF orientation) and RGB; closes ``image``."""
    try:
        with image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.filename else exc  # never a server path
        raise UploadError(f"the image is truncated or corrupt ({reason})") from None


def decode_upload(text: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode and check a base64 PNG/JPEG/WebP upload; return it as an RGB image.

    Raises ``UploadError`` when the text is not base64, fails ``check_upload`` or is
    truncated/corrupt.
    """
    return load_upload(check_upload(decode_base64(text), max_bytes, max_pixels))


def read_upload(path: str | os.PathLike[str], max_bytes: int, max_pixels: int) -> Image.Image:
    """Check and decode an uploaded PNG/JPEG/WebP file as ``decode_upload`` does a base64 one."""
    return load_upload(check_upload(path, max_bytes, max_pixels))


def guard_decoding(max_pixels: int) -> None:
    """Set PIL's process-wide decompression-bomb guard to ``max_pixels``.

    ``Image.open`` then warns above ``max_pixels`` and refuses more than twice as many: a
    backstop for any image this process opens without ``check_upload`` (Gradio's own
    decoding of data URLs, for one).
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
