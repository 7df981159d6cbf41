"""Fuzz a real worker with malformed requests: each gets a 4xx ErrorBody, never a traceback.

The cases are drawn from a seeded ``random.Random`` (reproducible): valid jobs with one to
three fields replaced by values that field must refuse (wrong types, huge or negative
numbers, sizes that are not multiples of 16, too many images, too-long prompts, bad
base64, bytes that are not an image, images that are too large or truncated), plus raw
bodies (truncated JSON, non-objects, NaN, deep nesting, invalid UTF-8, wrong content
types, a body over the size cap) and bad query strings. Afterwards the worker still
generates, and its log holds no traceback.
"""

from __future__ import annotations

import base64
import io
import json
import random

import httpx
import pytest
from PIL import Image

from bench.harness.processes import Processes
from tests.test_worker import WAIT, png_b64, png_size, start_worker, wait_ready
from webui.schema import ErrorBody

MAX_UPLOAD_BYTES = 200_000
BASE = {"prompt": "a portrait", "width": 128, "height": 128, "steps": 2}


def _image_b64(size: tuple[int, int], fmt: str = "PNG") -> str:
    return png_b64(Image.new("RGB", size, (90, 60, 30)), fmt)


def invalid_values() -> dict[str, list]:
    """For each request field, values it must refuse (with ``MAX_UPLOAD_BYTES`` as the cap)."""
    noise = random.Random(7).randbytes(MAX_UPLOAD_BYTES + 1000)
    return {
        "prompt": ["", None, 123, [], {"text": "x"}, "x" * 2001, True],
        "negative_prompt": ["n" * 2001, 5, [], None],
        "steps": [0, -1, 101, 10**30, "abc", 2.5, [], ""],
        "guidance": [-0.1, 30.5, 1e308, -1e308, "nan", "inf", "x", {}],
        "width": [63, 0, -512, 100, 130, 2064, 10**12, "wide", 128.5],
        "height": [-64, 8, 250, 4096, "tall", [128]],
        "seed": [-1, 2**32, 1.5, "seed", [1], 10**40],
        "lora_scale": [-1, 2.01, "strong", None],
        "num_images": [0, 5, 1000, "two", -3],
        "strength": [0, 1.5, -0.2, "x"],
        "init_image": [
            "!!!not base64!!!",
            base64.b64encode(b"hello, I am not an image").decode(),
            _image_b64((96, 96))[:150],  # truncated PNG
            _image_b64((4100, 4100)),  # more pixels than allowed
            _image_b64((16, 16)),  # too small
            _image_b64((96, 96), "GIF"),
            base64.b64encode(noise).decode(),  # over the byte cap
            "data:text/plain,hello",
            12345,
        ],
        "bogus_field": [1, "x"],
    }


def field_cases(values: dict[str, list], count: int, rng: random.Random) -> list[dict]:
    """``count`` JSON jobs, each with one to three fields set to one of ``values``."""
    cases = []
    for _ in range(count):
        job = dict(BASE)
        for field in rng.sample(sorted(values), rng.randint(1, 3)):
            job[field] = rng.choice(values[field])
        cases.append(job)
    return cases


RAW_BODIES: list[tuple[bytes, str]] = [
    (b'{"prompt": "a portrait", "steps": 2', "application/json"),  # truncated
    (b'{"prompt": "a portrait",}', "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"just a string"', "application/json"),
    (b"null", "application/json"),
    (b"42", "application/json"),
    (b"{}", "application/json"),
    (b'{"prompt": "a", "guidance": NaN}', "application/json"),
    (b'{"prompt": "a", "guidance": Infinity}', "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # deep nesting
    (b'{"prompt": "\xff\xfe bad utf-8"}', "application/json"),
    (b"prompt=a+portrait&steps=2", "text/plain"),
    (b"--x\r\nContent-Disposition: form-data; name=prompt\r\n\r\na\r\n--x--\r\n", "multipart/form-data; boundary=x"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"not json at all", ""),
    (b"prompt=a+portrait", "application/x-www-form-urlencoded"),
    (b'{"prompt": "' + b"x" * 400_000 + b'"}', "application/json"),  # over the body cap
]

BAD_QUERIES = [
    {},
    {"prompt": ""},
    {"prompt": "a", "steps": "abc"},
    {"prompt": "a", "width": "-5"},
    {"prompt": "a", "width": "100"},
    {"prompt": "a", "num_images": "99"},
    {"prompt": "a", "guidance": "nan"},
    {"prompt": "a", "seed": "-1"},
    {"prompt": "a", "init_image": "%%%"},
    {"prompt": "a", "unknown": "1"},
]


@pytest.fixture(scope="module")
def fuzz_worker():
    """A worker on the fixed-latency stand-in: the subject is the request checks, which come before any model."""
    with Processes("fuzz") as processes:
        yield wait_ready(start_worker(processes, "fuzz-worker", "--model", "standin:0",
                                      "--max-upload-bytes", str(MAX_UPLOAD_BYTES)))


def assert_clean_rejection(response: httpx.Response, case: object) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, repr(case)[:300], response.text[:300])
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error and body.detail, body


def test_malformed_requests_get_4xx_error_bodies_and_the_worker_survives(fuzz_worker):
    rng = random.Random(20241125)
    values = invalid_values()
    sent = 0
    with httpx.Client(base_url=fuzz_worker.url, timeout=WAIT) as client:
        for job in field_cases(values, 60, rng):
            response = client.post(rng.choice(["/generate", "/generate/stream"]), json=job)
            assert_clean_rejection(response, job)
            assert response.status_code == 422
            sent += 1
        for body, content_type in RAW_BODIES:
            headers = {"Content-Type": content_type} if content_type else {}
            response = client.post(rng.choice(["/generate", "/generate/stream"]), content=body, headers=headers)
            assert_clean_rejection(response, body[:80])
            sent += 1
        for query in BAD_QUERIES:
            response = client.get(rng.choice(["/generate", "/generate/stream"]), params=query)
            assert_clean_rejection(response, query)
            sent += 1
        assert sent >= 50

        stream = client.post("/generate/stream", json={**BASE, "width": 100})
        assert stream.status_code == 422 and "multiple of 16" in stream.json()["detail"]
        too_big = client.post("/generate", content=RAW_BODIES[-1][0], headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413 and too_big.json()["error"] == "body_too_large"
        pixels = client.post("/generate", json={**BASE, "init_image": values["init_image"][3]})
        assert pixels.status_code == 422 and "pixel limit" in pixels.json()["detail"]
        assert pixels.json()["fields"][0]["field"] == "init_image"

        ok = client.post("/generate", json={**BASE, "seed": 1})
        assert ok.status_code == 200, ok.text
        assert png_size(ok.json()["image"]) == (128, 128)
        assert client.get("/readyz").status_code == 200
    assert "Traceback" not in fuzz_worker.log()


def test_json_in_curl_default_form_type_is_accepted(fuzz_worker):
    """``curl -d '{...}'`` sends JSON as application/x-www-form-urlencoded: read it as JSON."""
    response = httpx.post(f"{fuzz_worker.url}/generate", content=json.dumps({**BASE, "seed": 4}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=WAIT)
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["image"]))).size == (128, 128)
