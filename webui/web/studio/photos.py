"""Photos in and portraits out: retouch uploads checked, decoded and scaled down; results saved."""

from __future__ import annotations

import base64
import io
import secrets
from pathlib import Path

from PIL import ExifTags, Image

from webui.images import check_upload, load_upload

RETOUCH_MAX_SIDE = 1536
"""Retouch uploads are scaled down to this many pixels on their longer side."""


def save_image(data: str, cache_dir: Path, name: str) -> Path:
    """Write a base64 PNG from the worker into Gradio's cache as is (no PNG decode, no re-encode).

    Each file gets a folder of its own with a random name (no hash of megabytes of PNG), so two
    jobs never write the same file and Gradio serves the file where it is (it is in its cache).
    """
    return save_file(base64.b64decode(data), cache_dir, name)


def save_file(data: bytes, cache_dir: Path, name: str) -> Path:
    """Write an image's bytes into Gradio's cache, in a folder of its own (see ``save_image``)."""
    folder = cache_dir / secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


TURNED = {5, 6, 7, 8}
"""EXIF orientations that turn the photo a quarter: it is shown (and retouched) with its sides swapped."""


def photo_size(path: str) -> tuple[int, int]:
    """A photo's (width, height) upright, as the worker gets it (EXIF orientation applied), from its header (run
    the upload checks first)."""
    with Image.open(path) as photo:
        width, height = photo.size
        return (height, width) if photo.getexif().get(ExifTags.Base.Orientation) in TURNED else (width, height)


def encode_photo(photo: Image.Image, max_side: int = RETOUCH_MAX_SIDE) -> str:
    """A retouch photo as base64 JPEG, scaled down to at most ``max_side`` pixels, without metadata.

    The worker picks the output size from the photo's aspect ratio and the model's default
    pixel count, so only the upload's size is bounded here.
    """
    photo = photo.convert("RGB")
    photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    photo.info.clear()  # no metadata goes on: PIL would write the upload's JPEG comment into this JPEG
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def is_plain_jpeg(image: Image.Image, max_side: int = RETOUCH_MAX_SIDE) -> bool:
    """Whether an opened upload is already what ``encode_photo`` makes: an RGB JPEG within ``max_side`` whose only
    application segment is JFIF's (no EXIF, so upright; no XMP, ICC profile, IPTC or comment to strip)."""
    return (image.format == "JPEG" and image.mode == "RGB" and max(image.size) <= max_side
            and all(marker == "APP0" for marker, _ in getattr(image, "applist", [])) and "comment" not in image.info)


def encode_photo_file(path: str, max_bytes: int, max_pixels: int, max_side: int = RETOUCH_MAX_SIDE) -> str:
    """``encode_photo`` for an uploaded file, checked (bytes, format, pixels from its header) before decoding.
    A plain JPEG (``is_plain_jpeg``) is decoded too (a corrupt one is refused) but sent as it is: a retouch's
    photo taken back from the History is retouched from the very bytes it was, not from a second JPEG of them.

    Raises ``UploadError`` (a sentence without the file's path) when the file is too large in
    bytes or pixels, not a PNG/JPEG/WebP image, too small or corrupt. Blocking: run it in a thread.
    """
    opened = check_upload(path, max_bytes, max_pixels)
    as_it_is = is_plain_jpeg(opened, max_side)
    photo = load_upload(opened)
    if as_it_is:
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return encode_photo(photo, max_side)
