"""The grouping scheduler's order: FIFO across groups, bounded overtaking, nothing lost (pure logic)."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from webui.schema import EffectiveParams
from webui.worker.grouping import GroupingPolicy, GroupingQueue, GroupKey, identical_when_batched

ON = GroupingPolicy(enabled=True, max_images=4, max_passes=2)


def key(steps: int) -> GroupKey:
    return GroupKey("demo", "FlowMatchEulerDiscreteScheduler", 512, 512, steps, 0.0, 1.0)


def drain(queue: GroupingQueue) -> list[list]:
    groups = []
    while len(queue):
        groups.append(queue.next_group())
    return groups


def test_off_by_default_one_job_per_call_in_arrival_order() -> None:
    queue: GroupingQueue[str] = GroupingQueue()
    for name, steps in (("a1", 8), ("a2", 8), ("b1", 4)):
        queue.put(name, key(steps))
    assert drain(queue) == [["a1"], ["a2"], ["b1"]]


def test_groups_leave_in_the_order_of_their_oldest_job() -> None:
    queue: GroupingQueue[str] = GroupingQueue(GroupingPolicy(enabled=True, max_images=8, max_passes=5))
    for name, steps in (("a1", 8), ("b1", 4), ("a2", 8), ("b2", 4), ("a3", 8)):
        queue.put(name, key(steps))
    assert drain(queue) == [["a1", "a2", "a3"], ["b1", "b2"]]


def test_a_group_draws_at_most_max_images_and_a_retouch_is_never_grouped() -> None:
    queue: GroupingQueue[str] = GroupingQueue(ON)
    queue.put("a1", key(8), images=2)
    queue.put("retouch", None)
    queue.put("a2", key(8), images=3)  # 2 + 3 > 4: waits for the next call
    queue.put("a3", key(8), images=2)
    assert drain(queue) == [["a1", "a3"], ["retouch"], ["a2"]]
    retouch = EffectiveParams(prompt="p", negative_prompt="", steps=8, guidance=0, width=64, height=64, seed=1,
                              lora_scale=1, num_images=1, mode="retouch", strength=0.5)
    assert GroupKey.of(retouch, "demo", "s") is None
    assert GroupKey.of(retouch.model_copy(update={"mode": "text2img"}), "demo", "s") is not None


def test_a_lone_incompatible_job_is_overtaken_by_at_most_max_passes_groups() -> None:
    queue: GroupingQueue[str] = GroupingQueue(ON)
    for steps in (1, 2, 3, 4):  # four older jobs, each with a partner behind the lone job
        queue.put(f"old{steps}", key(steps))
    queue.put("lone", key(99))
    for steps in (1, 2, 3, 4):
        queue.put(f"new{steps}", key(steps))
    groups = drain(queue)
    before_lone = groups[:next(index for index, group in enumerate(groups) if "lone" in group)]
    overtaking = [group for group in before_lone if any(name.startswith("new") for name in group)]
    assert len(overtaking) == ON.max_passes
    assert groups == [["old1", "new1"], ["old2", "new2"], ["old3"], ["old4"], ["lone"], ["new3"], ["new4"]]


def test_random_arrivals_every_job_once_in_order_and_overtaken_boundedly() -> None:
    rng = random.Random(7)
    queue: GroupingQueue[int] = GroupingQueue(ON)
    keys, images, served, arrivals = {}, {}, [], 0
    for _ in range(400):
        if rng.random() < 0.6:
            keys[arrivals], images[arrivals] = key(rng.choice((4, 8, 8, 8))), rng.choice((1, 1, 2))
            queue.put(arrivals, keys[arrivals], images[arrivals])
            arrivals += 1
        elif len(queue):
            served.append(queue.next_group())
    served += drain(queue)
    assert sorted(job for group in served for job in group) == list(range(arrivals))
    assert [group[0] for group in served] == sorted(group[0] for group in served)  # FIFO across groups
    for group in served:
        assert group == sorted(group) and len({keys[job] for job in group}) == 1
        assert sum(images[job] for job in group) <= ON.max_images
    for job in range(arrivals):  # groups served before ``job`` that carried a younger job
        position = next(index for index, group in enumerate(served) if job in group)
        assert sum(any(other > job for other in group) for group in served[:position]) <= ON.max_passes


def seeded_image(seed: int, shift: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 250, size=(8, 8, 3), dtype=np.uint8) + shift
    return Image.fromarray(pixels.astype(np.uint8))


def test_grouping_is_allowed_only_where_a_batch_reproduces_each_image() -> None:
    assert identical_when_batched(lambda seeds: [seeded_image(seed) for seed in seeds], [1, 2, 3])
    rounding = [seeded_image(seed, shift=len(seeds) > 1) for seeds in [[1, 2, 3]] for seed in seeds]
    assert not identical_when_batched(lambda seeds: rounding if len(seeds) > 1 else [seeded_image(seeds[0])],
                                      [1, 2, 3])
