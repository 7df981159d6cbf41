"""The worker's warm-up generation: one small image right after loading (and the self-check after an OOM).

Its own light module (no web framework), so that ``bench.gpu`` times exactly the warm-up a worker
or a promoted warm standby runs.
"""

from __future__ import annotations

import logging

from webui.schema import GenerationRequest
from webui.worker.pipelines.base import Pipeline

logger = logging.getLogger(__name__)

WARMUP_SIDE = 256
"""Width and height of the warm-up and post-OOM self-check generations."""
PROBE_PROMPT = "warm-up: a portrait photo"


def self_check(pipeline: Pipeline, steps: int) -> None:
    """One small generation of ``steps`` steps on ``pipeline``; raises on failure."""
    request = GenerationRequest(prompt=PROBE_PROMPT, steps=steps, width=WARMUP_SIDE, height=WARMUP_SIDE, seed=0)
    pipeline.warm_up(pipeline.effective_params(request, seed=0))
    logger.debug("self-check passed: %d steps at %dx%d", steps, WARMUP_SIDE, WARMUP_SIDE)
