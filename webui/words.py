"""How counts read in the messages every part writes for people."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 step``, ``8 steps``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
