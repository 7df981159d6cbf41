"""Grouping compatible queued jobs into one pipeline call: the order logic, off by default.

Jobs are compatible when one call can draw them together: same model, mode (text-to-image only;
a retouch carries its own photo), size, steps, guidance, scheduler and LoRA scale (``GroupKey``).
``GroupingQueue.next_group`` takes the oldest job and, behind it, the compatible jobs that fit in
``max_images``. Groups therefore leave in the order of their oldest job (FIFO across groups), and
jobs keep their order inside a group. A job that a group overtakes counts it; once it has been
passed over ``max_passes`` times, nothing behind it may be taken ahead of it any more, so an
incompatible job waits behind at most ``max_passes`` groups' worth of later jobs.

Why it is off (``GroupingPolicy.enabled`` False): image ``i`` of a job is drawn alone from its own
seed, and the same seed must give the same pixels in any run (``webui.worker.pipelines.diffusers``).
Batching the per-seed latents of several jobs into one call rounds differently (batched kernels),
so a worker may group only where ``identical_when_batched`` proves, for its pipeline and device,
that a batch gives byte-identical images to the one-at-a-time runs. Whether grouping raises
images/s on a GPU is for ``bench/gpu_session.py`` to measure; the worker does not group yet, and
behind a sidecar (``--queue-size 0``) its queue holds no job to group with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from PIL import Image

from webui.schema import EffectiveParams

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class GroupKey:
    """What must be equal for two jobs to share one pipeline call."""

    model: str
    scheduler: str
    width: int
    height: int
    steps: int
    guidance: float
    lora_scale: float

    @classmethod
    def of(cls, params: EffectiveParams, model: str, scheduler: str) -> GroupKey | None:
        """The key of a job, or None for one that is never grouped (a retouch: its own photo and strength)."""
        if params.mode != "text2img":
            return None
        return cls(model, scheduler, params.width, params.height, params.steps, params.guidance, params.lora_scale)


@dataclass(frozen=True)
class GroupingPolicy:
    """Whether to group, how many images one call may draw, how often a waiting job may be overtaken."""

    enabled: bool = False
    max_images: int = 8
    max_passes: int = 3


@dataclass(eq=False)  # entries are told apart by identity: two equal jobs are still two jobs
class _Entry(Generic[T]):
    job: T
    key: GroupKey | None
    images: int
    passes: int = 0


@dataclass
class GroupingQueue(Generic[T]):
    """Waiting jobs in arrival order; ``next_group`` takes the next call's jobs."""

    policy: GroupingPolicy = field(default_factory=GroupingPolicy)
    _entries: list[_Entry[T]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, job: T, key: GroupKey | None, images: int = 1) -> None:
        """Queue ``job`` (``key`` None: never grouped) drawing ``images`` images."""
        self._entries.append(_Entry(job, key, images))

    def next_group(self) -> list[T]:
        """The oldest job and, if grouping is on, the compatible jobs behind it that may join it."""
        if not self._entries:
            return []
        head = self._entries.pop(0)
        if not self.policy.enabled or head.key is None:
            return [head.job]
        taken, images, last_taken = [head], head.images, -1
        for index, entry in enumerate(self._entries):
            if entry.key == head.key and images + entry.images <= self.policy.max_images:
                taken.append(entry)
                images += entry.images
                last_taken = index
            elif entry.passes >= self.policy.max_passes:
                break  # overtaken often enough: nothing behind it goes first any more
        waiting = [entry for entry in self._entries if entry not in taken]
        for entry in self._entries[:last_taken + 1]:
            if entry not in taken:
                entry.passes += 1
        self._entries = waiting
        return [entry.job for entry in taken]


def identical_when_batched(run: Callable[[Sequence[int]], Sequence[Image.Image]], seeds: Sequence[int]) -> bool:
    """Whether ``run(seeds)`` (one call, a batch) gives byte-identical images to ``run([seed])`` per seed.

    ``run`` draws one image per seed, each from its own generator. Only where this holds may a
    worker turn grouping on without changing any image.
    """
    batched = [image.tobytes() for image in run(seeds)]
    alone = [run([seed])[0].tobytes() for seed in seeds]
    same = batched == alone
    logger.info("grouping: a batch of %d %s the one-at-a-time images", len(seeds),
                "reproduces" if same else "does NOT reproduce")
    return same
