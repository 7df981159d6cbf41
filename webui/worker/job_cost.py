"""A job's cost in megapixel-steps, and the per-job budget every job must fit.

Per-field limits still let one job ask for the largest of everything at once (4 images of
2048x2048 at 100 steps: minutes of a GPU's time and gigabytes of memory). A job's work is
about its pixels times its denoising steps times its images, so the worker also bounds that
product: ``check_cost`` refuses a job above ``Limits.max_megapixel_steps`` with a 422 that
names the fields and says what would fit. It runs on the job's effective parameters (the
model's defaults filled in, a retouch's size taken from its photo), where every job passes:
REST clients and the web fronts alike.
"""

from __future__ import annotations

import math

from webui.schema import EffectiveParams, Limits
from webui.words import plural
from webui.worker.job_parsing import ApiError, expected_steps

MEGAPIXEL = 1_000_000
SIZE_STEP = 16
"""A suggested size is a multiple of this (every model family's multiple divides it)."""
MIN_SIDE = 64


def megapixel_steps(params: EffectiveParams) -> float:
    """The job's cost: megapixels of each image x the denoising steps it runs x the images."""
    return params.width * params.height / MEGAPIXEL * expected_steps(params) * params.num_images


def amount(value: float) -> str:
    """A cost for a person: whole numbers from 100, three digits below (``1.05``, ``16.8``)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def what_fits(params: EffectiveParams, budget: float) -> list[str]:
    """Jobs like this one that fit ``budget``: fewer steps, fewer images, or a smaller size (each alone)."""
    megapixels, run = params.width * params.height / MEGAPIXEL, expected_steps(params)
    ideas = []
    steps_run = math.floor(budget / (megapixels * params.num_images))
    if steps_run >= 1:
        # a retouch runs only part of the steps it asks for: suggest what to ask
        ideas.append(plural(math.floor(steps_run * params.steps / run), "step"))
    images = math.floor(budget / (megapixels * run))
    if 1 <= images < params.num_images:
        ideas.append(plural(images, "image"))
    scale = math.sqrt(budget / megapixel_steps(params))
    width, height = (math.floor(side * scale / SIZE_STEP) * SIZE_STEP for side in (params.width, params.height))
    if min(width, height) >= MIN_SIDE:
        ideas.append(f"about {width}x{height} pixels")
    return ideas


def check_cost(params: EffectiveParams, limits: Limits) -> None:
    """Refuse (422 ``job_too_large``) a job whose cost is above the worker's budget."""
    cost, budget = megapixel_steps(params), limits.max_megapixel_steps
    if cost <= budget:
        return
    ideas, run = what_fits(params, budget), expected_steps(params)
    steps = plural(params.steps, "step")
    if run != params.steps:
        steps += f" ({run} run at strength {params.strength:g})"
    detail = (
        f"This job is too large: {plural(params.num_images, 'image')} of {params.width}x{params.height} pixels at "
        f"{steps} is {amount(cost)} megapixel-steps, and this worker takes at most "
        f"{amount(budget)} per job. Use fewer steps, fewer images or a smaller size"
        + (f": e.g. {', or '.join(ideas)}." if ideas else ".")
    )
    allowed = f"at most {amount(budget)} megapixel-steps (width x height / 1,000,000 x steps x images) in all"
    fields = [{"field": name, "message": f"{getattr(params, name)}: the job is {amount(cost)} megapixel-steps",
               "allowed": allowed} for name in ("steps", "num_images", "width", "height")]
    raise ApiError(422, "job_too_large", detail, fields=fields)
