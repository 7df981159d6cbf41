"""Retouch uploads at the web front: checked from the file's size and header before any decoding.

A 12000x12000 PNG (a few hundred KB, 144 million pixels) must be refused with a sentence that
names the pixel limit, no server path, and without the memory a decode would take (PIL needs
144 MB for its greyscale pixels alone, over 400 MB once converted to RGB).
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.data_classes import ImageData
from PIL import Image

from tests.helpers import blank_png, peak_rss, reset_peak_rss
from webui.contract import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from webui.images import UploadError, check_upload, guard_decoding
from webui.settings import WebSettings, WorkerSettings
from webui.web.photo_input import PhotoInput
from webui.web.studio.handlers import Studio
from webui.web.studio.photos import encode_photo_file

pytestmark = pytest.mark.timeout(60)

BOMB_SIDE = 12000
DECODE_FREE_BYTES = 30 * 2**20
"""Peak memory growth allowed for refusing a bomb: far below the 144 MB one decode needs."""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blank_png(tmp_path_factory.mktemp("bomb") / "bomb.png", BOMB_SIDE, BOMB_SIDE)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 3000x2000 JPEG with real detail (noise), as a camera would send."""
    pixels = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.fixture
def pil_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL's decompression-bomb guard as the web front sets it; restored afterwards."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    guard_decoding(MAX_UPLOAD_PIXELS)


class NoWorkers:
    """A worker client that fails the test if a job reaches it."""

    async def generate(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a refused upload reached the workers")


def studio() -> Studio:
    return Studio(NoWorkers(), None, "test-front", Path("/nonexistent"))  # type: ignore[arg-type]


def refusal(path: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> tuple[str, int]:
    """(the message, the peak memory growth) of refusing the upload at ``path``."""
    before = reset_peak_rss()
    with pytest.raises(UploadError) as caught:
        encode_photo_file(str(path), max_bytes, MAX_UPLOAD_PIXELS)
    return str(caught.value), peak_rss() - before


def test_web_front_limits_default_to_the_workers() -> None:
    web, worker = WebSettings(), WorkerSettings()
    assert (web.max_upload_bytes, web.max_upload_pixels) == (worker.max_upload_bytes, worker.max_upload_pixels)
    assert (web.max_upload_bytes, web.max_upload_pixels) == (MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS) == (10 * 2**20,
                                                                                                     4096 * 4096)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's default guard only warns
@pytest.mark.parametrize("guarded", [False, True], ids=["pil-default", "pil-guard"])
def test_pixel_bomb_is_refused_without_decoding(bomb: Path, guarded: bool, request: pytest.FixtureRequest) -> None:
    if guarded:
        request.getfixturevalue("pil_guard")
    assert bomb.stat().st_size < MAX_UPLOAD_BYTES  # small on disk: only the pixel count gives it away

    message, growth = refusal(bomb)

    assert f"more than the {MAX_UPLOAD_PIXELS}-pixel limit" in message
    assert not guarded or "too many pixels" in message  # PIL's guard refused it first, as readably
    assert guarded or f"{BOMB_SIDE}x{BOMB_SIDE}" in message
    assert str(bomb.parent) not in message
    assert growth < DECODE_FREE_BYTES, f"peak memory grew by {growth >> 20} MiB: the image was decoded"


def test_byte_limit_and_format_are_checked_before_opening(tmp_path: Path, photo: Path) -> None:
    message, _ = refusal(photo, max_bytes=1000)
    assert f"the file has {photo.stat().st_size} bytes, more than the 1000-byte limit" == message

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    message, _ = refusal(text)
    assert message == "not a PNG, JPEG or WebP image"


def test_normal_photo_is_checked_then_scaled_down(photo: Path, pil_guard: None) -> None:
    encoded = encode_photo_file(str(photo), MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "JPEG" and image.size == (1536, 1024)
    with check_upload(photo, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS) as lazy:  # the header alone
        assert lazy.size == (3000, 2000)


def test_a_plain_jpeg_is_sent_as_it_is_and_one_with_metadata_is_made_plain(
        photo: Path, tmp_path: Path, pil_guard: None) -> None:
    """A photo taken back from the History (the JPEG the job was given) is retouched from the same bytes; a JPEG
    that carries EXIF (a phone's orientation, its location) or a comment is decoded, turned upright and made anew."""
    made = base64.b64decode(encode_photo_file(str(photo), MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS))
    kept = tmp_path / "from-the-history.jpg"
    kept.write_bytes(made)
    assert base64.b64decode(encode_photo_file(str(kept), MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS)) == made

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn a quarter
    exif[0x010F] = "PhoneMaker"
    for name, extra in (("exif.jpg", {"exif": exif.tobytes()}), ("comment.jpg", {"comment": b"at home"})):
        with Image.open(kept) as image:
            image.save(tmp_path / name, quality=95, **extra)
        sent = base64.b64decode(encode_photo_file(str(tmp_path / name), MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS))
        with Image.open(io.BytesIO(sent)) as image:
            assert [marker for marker, _ in image.applist] == ["APP0"] and "comment" not in image.info, name
            assert image.size == ((1024, 1536) if name == "exif.jpg" else (1536, 1024)), name


def test_retouch_handlers_refuse_a_bomb_readably(bomb: Path, pil_guard: None) -> None:
    with pytest.raises(gr.Error) as caught:
        asyncio.run(studio().api_retouch(str(bomb), "retouched portrait"))
    assert caught.value.message.startswith("image: ") and f"{MAX_UPLOAD_PIXELS}-pixel limit" in caught.value.message
    assert str(bomb.parent) not in caught.value.message

    outputs = asyncio.run(studio().ui_retouch(str(bomb), 0.5, "portrait", "", 2, 0.0, None, True, 1.0, 1))
    error = outputs[3]  # said once, in the error area (no toast besides)
    assert error.visible is True and error.value.startswith("**Could not retouch:** This photo cannot be used: ")
    assert f"{MAX_UPLOAD_PIXELS}-pixel limit" in error.value and str(bomb.parent) not in error.value


def test_photo_input_passes_uploads_on_unopened(bomb: Path, tmp_path: Path) -> None:
    photo_input = PhotoInput(type="filepath", render=False)
    photo_input.GRADIO_CACHE = str(tmp_path)
    assert photo_input.preprocess(ImageData(path=str(bomb))) == str(bomb)

    data_url = "data:image/png;base64," + base64.b64encode(bomb.read_bytes()).decode()
    before = reset_peak_rss()
    path = photo_input.preprocess(ImageData(url=data_url))
    assert peak_rss() - before < DECODE_FREE_BYTES
    assert Path(path).parent.parent == tmp_path and Path(path).read_bytes() == bomb.read_bytes()
