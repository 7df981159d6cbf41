"""The retouch photo input: a ``gr.Image`` that hands its handler the upload's file path, unopened.

Gradio's own ``gr.Image`` preprocessing opens every upload with PIL (for ``type="pil"`` it
decodes every pixel; even for ``type="filepath"`` it reads the header, where PIL's
decompression-bomb guard would refuse a huge image with PIL's message before the handler
could name the limit) and decodes data URLs in full. ``PhotoInput`` decodes nothing: the
handler checks the file with ``webui.images.check_upload`` and decodes it only then.
"""

from __future__ import annotations

import gradio as gr
from gradio import processing_utils
from gradio.data_classes import ImageData


class PhotoInput(gr.Image):
    """``gr.Image`` whose value, as an input, is the path of the uploaded file (or None).

    Use it with ``type="filepath"``. Gradio has already checked that an uploaded path lies in
    its upload folder before ``preprocess`` runs. A data URL is written to Gradio's cache as
    bytes (not decoded). ``is_template``: the browser renders it with Gradio's Image component.
    """

    is_template = True

    def preprocess(self, payload: ImageData | None) -> str | None:
        """The path of the uploaded file, without opening it."""
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return processing_utils.save_base64_to_cache(payload.url, self.GRADIO_CACHE)
        return payload.path
