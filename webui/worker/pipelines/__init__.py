"""What a worker serves: the pipelines, where their weights come from, and where they run.

- ``base``: the shape every pipeline has (``Pipeline``, ``PipelineBase``: defaults, request -> parameters,
  ``check_inputs``); ``standin``: the benchmarks' fixed-latency stand-in; ``diffusers``: the real model.
- ``loader``: ``load_pipeline`` picks one for a worker's settings; the one place torch and diffusers are
  imported, only when a real model is asked for. ``warmup``: the self-check generation.
- ``sources``: what ``--model``/``--lora`` name; ``models``: loading them with diffusers, LoRA included;
  ``device``: where and how they run.
- ``demo`` (its place in the cache), ``demo_build`` and ``demo_tokenizer`` (``python -m
  webui.worker.pipelines.demo_build``), ``lora_layouts``: the offline demo model.

Imports point one way (base <- standin, sources <- loader; diffusers, device, models, demo_build only
behind the loader), so the package has no import circle and imports nothing heavy on its own.
"""
