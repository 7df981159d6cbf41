"""Image sizes on the studio page: a typed size snapped to the model's multiple, a retouch's size from its photo.

Pure functions; ``form_events`` shows their results in the page, ``handlers`` sends them to the workers.
"""

from __future__ import annotations

from webui.contract import MAX_SIDE

MIN_SIDE = 256
"""The size sliders' minimum."""


def snap(size: float, multiple: int) -> int:
    """``size`` rounded to the nearest ``multiple`` (halves up), as a browser's range input rounds it."""
    return int(size / multiple + 0.5) * multiple


def snap_side(size: float, multiple: int, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> int:
    """``snap``, kept within ``[min_side, max_side]`` (both rounded to multiples the model takes)."""
    low = max(multiple, -(-min_side // multiple) * multiple)
    return min(max(snap(size, multiple), low), max_side - max_side % multiple)


def retouch_size(photo: tuple[int, int], multiple: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """A retouch's output size: the photo's own size, scaled down to fit ``max_side`` and snapped to
    ``multiple`` (a 1200×1600 photo stays 1200×1600 with multiples of 16; a 4000×3000 one becomes 2048×1536)."""
    width, height = photo
    scale = min(1.0, max_side / max(width, height))
    return (snap_side(width * scale, multiple, max_side, multiple),
            snap_side(height * scale, multiple, max_side, multiple))


def size_words(width: int, height: int) -> str:
    return f"{width}×{height}"


def snapped_note(typed: tuple[float, float], snapped: tuple[int, int], multiple: int) -> str:
    """What the page says when a typed size was changed ("" when it was kept as typed)."""
    if tuple(int(side) for side in typed) == snapped and all(side == int(side) for side in typed):
        return ""
    before = size_words(*(int(side) for side in typed))
    return (f"Size set to **{size_words(*snapped)}** (you typed {before}): this model makes images in "
            f"multiples of {multiple} pixels.")


def retouch_note(size: tuple[int, int] | None, multiple: int, max_side: int = MAX_SIDE) -> str:
    """What the Retouch tab says about the result's size, before and after a photo is chosen."""
    rule = f"rounded to multiples of {multiple} pixels, at most {max_side} on a side"
    if size is None:
        return f"The result has your photo's size and shape ({rule})."
    return f"The result will be **{size_words(*size)}**: your photo's size ({rule})."
