"""GPU benchmark of real-size Z-Image-Turbo jobs, on the architecture twin (random weights, no download).

    python -m bench.gpu                                   # the full matrix below, on CUDA device 0
    python -m bench.gpu --runs 20 --dtypes bfloat16 --attention sdpa --compile off --no-oom

For every variant (``--dtypes`` x ``--attention`` x ``--compile``) it builds the twin
(``assets.twin_model``: the real transformer, Qwen3-4B text encoder and 16-channel VAE with
random weights created on the GPU), wraps it as the worker does
(``PortraitPipeline.from_pipeline`` applies the worker's device plan: dtype, attention backend,
``torch.compile`` of the transformer) and times one job per ``--sizes`` entry along two paths on
that same object, interleaved run by run:

* *diffusers*: the bare loop, ``ZImagePipeline.__call__`` as Z-Image-Turbo's model card calls it;
* *serving*: ``PortraitPipeline.generate``, what a worker runs for a job (per-step callback,
  per-image generators, VAE tiling decision). Goal: within 5 % of *diffusers*.

It reports p50/p95 after ``--warmup`` runs per path (the first call, which includes
``torch.compile``, separately), ``torch.cuda.max_memory_allocated`` (weights included), and for
eager variants of the first ``--attention`` entry the largest batch (at ``--oom-size``) and the
largest square side (one image) that run before CUDA runs out of memory: doubling until a
failure, then bisecting, over ``--oom-steps`` denoising steps (peak memory does not grow with
steps). Results: a Markdown table on stdout and in ``bench/results/gpu.md`` (rewritten after
every variant, so an interrupted run keeps what it measured).

Without CUDA it refuses with one line and exit code 2.
"""
