"""One GPU session's measurements for issue 25, in one call: configurations, their images, restart-to-ready.

    python -m bench.gpu_session --out "$OUT"          # on a lent H100/H200: about 6 minutes
    python -m bench.gpu_session --tiny --out /tmp/x   # the same code on the CPU, the scaled-down twin, seconds

* **Configurations** (``configs``): the worker's chooser (``webui.worker.pipelines.configuration``,
  asked with ``--fp8 auto``) names the fastest configuration for this GPU and its fallbacks (no FP8,
  then no compile); each is applied to the architecture twin through the worker's own code
  (``plan_device`` + ``PortraitPipeline.from_pipeline``) and timed along the serving path
  (p50/p95 after the warm-up, which includes the compile), then draws fixed seeds that are compared
  with eager bfloat16's by the quality gate (``webui.worker.pipelines.quality``).
* **Restart-to-ready** (``restart``): two fresh processes, one after the other, sharing one compile
  cache directory (``webui.worker.compile_cache``): build, place, the worker's warm-up, the first and
  a second job. The first fills the cache, the second is a restart that should reuse it.

``--tiny`` runs the same code on the CPU (the scaled-down twin, eager only, restarts in-process) so the
suite keeps it working. Results: ``gpu-session.md`` (tables) and ``gpu-session.json`` in ``--out``.
``bench/gpu_session.sh`` runs this and then ``bench.gpu``'s takeover and memory-limit search, all in one call.
"""
