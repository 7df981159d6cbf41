"""Fault injection, FOR TESTS ONLY: make a worker run out of memory, die or stall mid-generation.

Production never sets these variables. The test suite and the benchmarks set them on a
worker process to prove that the worker, the balancer and the web front survive the
ways a GPU worker really fails:

``PORTRAIT_FAULT_OOM_AT_STEP=k``
    At denoising step ``k`` (1-based) raise the exception a real out-of-memory raises:
    ``torch.cuda.OutOfMemoryError`` when the pipeline runs on CUDA, ``MemoryError`` on CPU.
    The worker handles it exactly like a real one (507, clean-up, self-check, exit with
    ``EXIT_OOM`` after ``max_consecutive_ooms`` in a row).
``PORTRAIT_FAULT_DIE_AT_STEP=k``
    At step ``k`` send SIGKILL to the worker's own process: an abrupt death with the
    request half done, as when the kernel's OOM killer or a driver crash takes a worker.
``PORTRAIT_FAULT_STALL_AT_STEP=k``
    After step ``k`` block the generation thread in a sleep (which releases the GIL, like a
    stuck driver call) for ``STALL_SECONDS``: the event loop still answers, no step comes.
``PORTRAIT_FAULT_PROMPT_MARKER=text``
    Fire the faults above only for prompts that contain ``text`` (otherwise: every job).

Faults apply to user jobs only, never to the worker's own warm-up or post-OOM self-check.
They are an ``on_step`` wrapper, so the pipeline code knows nothing about them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from webui.contract import FAULT_DIE_AT_STEP, FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER, FAULT_STALL_AT_STEP
from webui.schema import StepCallback
from webui.worker.pipelines.base import loaded_torch

logger = logging.getLogger(__name__)

STALL_SECONDS = 300.0
"""How long an injected stall blocks the generation thread (the sidecar kills the worker long before)."""

def out_of_memory_error(message: str, cuda: bool) -> BaseException:
    """The exception the device raises when it runs out of memory."""
    torch = loaded_torch()  # on CUDA, the pipeline loaded it
    if cuda and torch is not None:
        return torch.cuda.OutOfMemoryError(message)
    return MemoryError(message)


class FaultPlan(BaseModel):
    """Which faults to inject, read once from the environment at start."""

    model_config = ConfigDict(frozen=True)

    oom_at_step: int | None = Field(None, ge=1)
    die_at_step: int | None = Field(None, ge=1)
    stall_at_step: int | None = Field(None, ge=1)
    prompt_marker: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaultPlan:
        """Read ``PORTRAIT_FAULT_*``; raises ``pydantic.ValidationError`` for a malformed value."""
        plan = cls(
            oom_at_step=environ.get(FAULT_OOM_AT_STEP) or None,
            die_at_step=environ.get(FAULT_DIE_AT_STEP) or None,
            stall_at_step=environ.get(FAULT_STALL_AT_STEP) or None,
            prompt_marker=environ.get(FAULT_PROMPT_MARKER, ""),
        )
        if plan.active:
            logger.warning("FAULT INJECTION ACTIVE (tests only): %s", plan.model_dump(exclude_defaults=True))
        return plan

    @property
    def active(self) -> bool:
        """Whether any fault is configured."""
        return any(step is not None for step in (self.oom_at_step, self.die_at_step, self.stall_at_step))

    def applies_to(self, prompt: str) -> bool:
        """Whether a job with this prompt gets the faults."""
        return self.active and self.prompt_marker in prompt

    def wrap(self, on_step: StepCallback | None, prompt: str, cuda: bool) -> StepCallback | None:
        """``on_step`` with the faults added for this prompt (``on_step`` itself when none apply)."""
        if not self.applies_to(prompt):
            return on_step

        def faulty_step(step: int, total: int) -> None:
            if on_step is not None:
                on_step(step, total)
            if step == self.die_at_step:
                logger.warning("fault injection: SIGKILL at step %d/%d", step, total)
                os.kill(os.getpid(), signal.SIGKILL)
            if step == self.stall_at_step:
                logger.warning("fault injection: stalling %.0f s after step %d/%d", STALL_SECONDS, step, total)
                time.sleep(STALL_SECONDS)
            if step == self.oom_at_step:
                logger.warning("fault injection: out of memory at step %d/%d", step, total)
                raise out_of_memory_error(f"injected fault: out of memory at denoising step {step}", cuda)

        return faulty_step
