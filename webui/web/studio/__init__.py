"""The studio page of a web front: what it offers (``config``), how it looks (``layout``), what its
events do (``handlers``) and how photos go in and results come out (``photos``).

Client API (``gradio_client.Client(url).predict(..., api_name=...)``):

- ``/generate`` (prompt, negative_prompt="", steps=None, guidance=None, width=None,
  height=None, seed=-1, lora_scale=1.0, num_images=1) -> (gallery, info)
- ``/retouch`` (image, prompt, strength=0.6, negative_prompt="", steps=None, guidance=None,
  seed=-1, lora_scale=1.0, num_images=1) -> (gallery, info)

``None`` means the loaded model's default; seed -1 means random. ``gallery`` is a list of
``{"image": path, "caption": str}``; ``info`` is the dict ``info.result_info`` builds.
"""
