"""The GPU worker process (``python -m webui.worker``): one HTTP server that owns one diffusers pipeline.

``app`` (routes, process), ``generation`` (the job service: load, warm up, run, out-of-memory
handling), ``scheduler`` (one job at a time, a bounded queue), ``pipeline`` / ``models`` /
``device`` (the diffusers pipeline, its model and LoRA, the device plan), ``job_parsing`` (a
request's body to a validated job), ``errors`` (domain errors), ``faults`` (test-only fault
injection), ``metrics``.
"""
