"""A job inside a worker between its admission and its result: ``Admitted`` (accepted, not yet run) and
``Generated`` (its images, not yet encoded)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from webui.schema import EffectiveParams, GenerationRequest, StepCallback


@dataclass(frozen=True)
class Generated:
    """A job's images, generated and not yet encoded, with what its result reports."""

    images: list[Image.Image]
    seed: int
    params: EffectiveParams
    input_sha256: str | None
    """Retouch: the SHA-256 of the photo the job sent (its recipe names it)."""
    received_at: float
    started: float
    finished: float


class Generator(Protocol):
    """What runs a job's generation: ``webui.worker.generation.GenerationService``."""

    def run(self, job: GenerationRequest, init_image: Image.Image | None, seed: int, received_at: float,
            cancel: threading.Event, on_progress: StepCallback | None = None,
            input_sha256: str | None = None) -> Generated: ...


@dataclass(frozen=True)
class Admitted:
    """A job the worker accepted: its request, its decoded photo (retouch) and that photo's SHA-256, its seed."""

    request: GenerationRequest
    init_image: Image.Image | None
    seed: int
    input_sha256: str | None = None

    def run(self, service: Generator, received_at: float, cancel: threading.Event,
            on_progress: StepCallback | None = None) -> Generated:
        """Run it on ``service`` (the generation thread)."""
        return service.run(self.request, self.init_image, self.seed, received_at, cancel, on_progress,
                           self.input_sha256)
