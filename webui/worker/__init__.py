"""The GPU worker process (``python -m webui.worker``): one HTTP server that owns one diffusers pipeline.

``app`` (routes), ``serve`` (the process), ``request_log``, ``http_errors`` (errors to HTTP),
``job_stream`` (the NDJSON answer), ``generation`` (the job service: load, warm up, run, out-of-memory
handling), ``scheduler`` (one job at a time, a bounded queue), ``servable`` (what every pipeline
shares, which one to load), ``pipeline`` / ``models`` / ``device`` (the diffusers pipeline, its
model and LoRA, the device plan), ``standin`` (the benchmarks' fixed-latency stand-in), ``job_parsing`` (a
request's body to a validated job), ``errors`` (domain errors), ``faults`` (test-only fault
injection), ``metrics``.
"""
