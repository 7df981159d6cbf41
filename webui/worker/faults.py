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
``PORTRAIT_FAULT_STEP_CPU_SECONDS=s``
    Keep each denoising step computing until it has used ``s`` seconds of the generation thread's
    CPU time: a slow model, so that a test's job lasts at least steps x ``s`` whatever the CPU's
    speed (a CPU-starved worker's job longer still), where a fixed-latency sleep would not be
    CPU work.
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

from webui.contract import (
    FAULT_DIE_AT_STEP,
    FAULT_OOM_AT_STEP,
    FAULT_PROMPT_MARKER,
    FAULT_STALL_AT_STEP,
    FAULT_STEP_CPU_SECONDS,
)
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


def compute_until(cpu_seconds: float) -> None:
    """Compute until this thread has used ``cpu_seconds`` of CPU time in all (``time.thread_time``)."""
    while time.thread_time() < cpu_seconds:
        sum(range(1000))


class FaultPlan(BaseModel):
    """Which faults to inject, read once from the environment at start."""

    model_config = ConfigDict(frozen=True)

    oom_at_step: int | None = Field(None, ge=1)
    die_at_step: int | None = Field(None, ge=1)
    stall_at_step: int | None = Field(None, ge=1)
    step_cpu_seconds: float | None = Field(None, gt=0)
    prompt_marker: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaultPlan:
        """Read ``PORTRAIT_FAULT_*``; raises ``pydantic.ValidationError`` for a malformed value."""
        plan = cls(
            oom_at_step=environ.get(FAULT_OOM_AT_STEP) or None,
            die_at_step=environ.get(FAULT_DIE_AT_STEP) or None,
            stall_at_step=environ.get(FAULT_STALL_AT_STEP) or None,
            step_cpu_seconds=environ.get(FAULT_STEP_CPU_SECONDS) or None,
            prompt_marker=environ.get(FAULT_PROMPT_MARKER, ""),
        )
        if plan.active:
            logger.warning("FAULT INJECTION ACTIVE (tests only): %s", plan.model_dump(exclude_defaults=True))
        return plan

    @property
    def active(self) -> bool:
        """Whether any fault is configured."""
        return any(value is not None
                   for value in (self.oom_at_step, self.die_at_step, self.stall_at_step, self.step_cpu_seconds))

    def applies_to(self, prompt: str) -> bool:
        """Whether a job with this prompt gets the faults."""
        return self.active and self.prompt_marker in prompt

    def wrap(self, on_step: StepCallback | None, prompt: str, cuda: bool) -> StepCallback | None:
        """``on_step`` with the faults added for this prompt (``on_step`` itself when none apply)."""
        if not self.applies_to(prompt):
            return on_step

        step_began = time.thread_time()

        def faulty_step(step: int, total: int) -> None:
            nonlocal step_began
            if self.step_cpu_seconds is not None:
                compute_until(step_began + self.step_cpu_seconds)
                step_began = time.thread_time()
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
