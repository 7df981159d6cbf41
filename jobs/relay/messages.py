"""Gradio's event-stream messages as the relay reads them: ``data: {json}`` frames, each ended by a blank line."""

from __future__ import annotations

import json
from typing import Any

FRAME_END = b"\n\n"
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""The longest frame the relay takes from a web front (a result's message names its files: it is small)."""
COMPLETED = "process_completed"
"""The last message of a call: its output, or its error."""
CLOSE = "close_stream"
"""The web front's last message on a stream: the session has no call left there."""
LOST_TITLE = "Generation failed"

Message = dict[str, Any]


class FrameTooLarge(Exception):
    """A web front sent more than ``MAX_FRAME_BYTES`` without ending a frame."""


class Frames:
    """Cuts a byte stream into whole frames (without their blank line)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames ``chunk`` completes; what is left waits for the next chunk."""
        *frames, self._rest = (self._rest + chunk).split(FRAME_END)
        if len(self._rest) > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"a frame of more than {MAX_FRAME_BYTES} bytes")
        return [frame for frame in frames if frame.strip()]


def parsed(frame: bytes) -> Message | None:
    """The frame's message; None for anything else (a comment, a line that is not JSON)."""
    if not frame.startswith(b"data:"):
        return None
    try:
        value = json.loads(frame[5:])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def encoded(message: Message) -> bytes:
    """``message`` as one frame, blank line included."""
    return b"data: " + json.dumps(message, separators=(",", ":")).encode() + FRAME_END


def lost(event_id: str, words: str) -> Message:
    """The end of a call that nobody can finish: an error the client raises (gradio_client: ``AppError``)."""
    return {"msg": COMPLETED, "event_id": event_id, "success": False,
            "output": {"error": words, "title": LOST_TITLE, "visible": True}}
