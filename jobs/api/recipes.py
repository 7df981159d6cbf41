"""``POST /v1/recipes``: a PNG the studio made in, its recipe out (what made it, and the job that makes it again).

The body is the PNG file's bytes (``curl --data-binary @portrait.png -H 'Content-Type: image/png'``), at most
``MAX_RECIPE_PNG_BYTES``; nothing is stored. A larger body is a 413, anything but a PNG a 415, a PNG without a
recipe (made elsewhere, or stripped by an editor) a 422, each as ``{"error","detail","fields"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from jobs.api.errors import RESPONSES
from jobs.contract import MAX_RECIPE_PNG_BYTES, RECIPES_PATH
from webui.recipe import PNG_SIGNATURE, Recipe, RecipeError, read_recipe, remake_fields
from webui.worker.job_parsing import ApiError, read_body

logger = logging.getLogger(__name__)


class RecipeAnswer(Recipe):
    """A PNG's recipe, and the job that makes its image again."""

    remake: dict[str, Any] = Field(description="A ``POST /v1/jobs`` body that makes this image again, alone (a "
                                   "retouch also needs its photo as ``init_image``; ``input_sha256`` names it).")


router = APIRouter(tags=["recipes"], responses=RESPONSES)


@router.post(RECIPES_PATH, response_model=RecipeAnswer, openapi_extra={"requestBody": {
    "required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def read_png_recipe(request: Request) -> RecipeAnswer:
    """The recipe a PNG carries (its text chunks): prompt, model and LoRA hashes, seed, steps, guidance, size,
    scheduler, versions, the photo's SHA-256 for a retouch; ``remake`` is the job that makes the image again."""
    png = await read_body(request, MAX_RECIPE_PNG_BYTES)
    if not png.startswith(PNG_SIGNATURE):
        raise ApiError(415, "not_png", "The body is not a PNG file. Send the bytes of a PNG the studio made as the "
                       "request body (Content-Type: image/png).", fields=[{"field": "body", "message": "not a PNG"}])
    try:
        recipe = await run_in_threadpool(read_recipe, png, MAX_RECIPE_PNG_BYTES)
    except RecipeError as exc:
        raise ApiError(422, "no_recipe", f"This PNG's recipe cannot be read: {exc}.",
                       fields=[{"field": "body", "message": str(exc)}]) from None
    logger.info("read the recipe of a %d-byte PNG (seed %d)", len(png), recipe.seed)
    return RecipeAnswer(**recipe.model_dump(), remake=remake_fields(recipe))
