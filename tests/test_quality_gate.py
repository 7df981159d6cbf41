"""The quality gate on real images: an image, a slightly noised copy, a very different image."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.worker.pipelines.quality import QualityGate, difference, select

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "result.png"


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    """Two real crops of the studio screenshot (the prompt panel, the generated image) and a noised copy."""
    screenshot = Image.open(SCREENSHOT).convert("RGB")
    panel = screenshot.crop((32, 380, 288, 636))
    picture = screenshot.crop((700, 300, 956, 556))
    noise = np.random.default_rng(0).normal(0.0, 2.0, size=(256, 256, 3))
    noised = Image.fromarray(np.clip(np.asarray(panel, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8))
    return {"panel": panel, "noised": noised, "picture": picture}


def test_difference_of_identical_close_and_different_images(images: dict[str, Image.Image]) -> None:
    assert math.isinf(difference(images["panel"], images["panel"].copy()).psnr_db)
    close = difference(images["panel"], images["noised"])
    far = difference(images["panel"], images["picture"])
    assert 38 < close.psnr_db < 48 and close.mean_abs < 2.5  # sigma 2 noise: about 42 dB, 1.6 levels
    assert far.psnr_db < 15 and far.mean_abs > 40
    with pytest.raises(ValueError, match="size"):
        difference(images["panel"], images["picture"].resize((128, 128)))


def test_the_gate_keeps_a_close_configuration_and_refuses_a_different_one(images: dict[str, Image.Image]) -> None:
    gate = QualityGate()
    reference = [images["panel"], images["picture"]]
    assert gate.verdict(reference, [images["noised"], images["picture"]]).passed
    refused = gate.verdict(reference, [images["noised"], images["panel"]])  # one seed drew something else
    assert not refused.passed and "outside the gate" in refused.reason and refused.worst.mean_abs > 40


def test_select_falls_back_past_a_refused_configuration(images, caplog: pytest.LogCaptureFixture) -> None:
    reference = [images["panel"]]
    drawn = {"fp8": [images["picture"]], "compile": [images["noised"]], "eager": [images["panel"]]}
    rendered = []

    def render(name: str) -> list[Image.Image]:
        rendered.append(name)
        return drawn[name]

    with caplog.at_level(logging.INFO, logger="webui.worker.pipelines.quality"):
        selection = select(["fp8", "compile"], render, reference, QualityGate(), baseline="eager")
    assert selection.chosen == "compile" and rendered == ["fp8", "compile"]
    assert [verdict.passed for _, verdict in selection.verdicts] == [False, True]
    assert "fp8 refused" in caplog.text and "falling back to compile" in caplog.text
    everything_refused = select(["fp8"], render, reference, QualityGate(min_psnr_db=60), baseline="eager")
    assert everything_refused.chosen == "eager"
