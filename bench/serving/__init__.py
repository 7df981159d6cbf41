"""Serving benchmark: what each layer adds to one generation, and 1 vs 2 workers under load.

    python -m bench.serving                       # demo model, 512x512, 8 steps, CPU
    python -m bench.serving --runs 20 --size 768  # more runs, larger images

It starts its own cluster (``launch.py``: HAProxy, sidecar, 2 nodes) on free loopback ports,
loads the same model in this process, and runs the same job (same prompt, size, steps and
seed per repetition) along four paths, interleaved round-robin so that drift on the machine
hits every path alike:

(a) ``PortraitPipeline.generate`` in this process (the floor),
(b) one worker's REST API (``POST /generate`` on the worker),
(c) HAProxy's public ``/generate`` (HAProxy -> least-loaded worker),
(d) ``gradio_client`` through HAProxy's public frontend (HAProxy -> web front -> HAProxy's
    worker frontend -> worker, with per-step progress streamed back).

Every path must return the pixel-identical image for a given seed (checked). It prints
median and p95 per path and the overhead ratio vs (a), then measures requests/s through
HAProxy with ``--concurrency`` REST clients: ``--rounds`` rounds of a ``--seconds`` phase with
one worker (the other set to ``maint`` in HAProxy), then one with two, so that other load on
the machine hits both alike; each phase counts the jobs completed inside it. Results go to
``bench/results/serving.md`` and ``serving.png``.

On a GPU machine, benchmark a real model with its own settings, e.g.::

    python -m bench.serving --model awportrait-z --steps 8 --size 1024 --runs 10 --threads 0
    python -m bench.serving --model sdxl --steps 30 --guidance 7.5 --size 1024 --nodes 2

``--model`` takes what ``python -m webui.worker --model`` takes (the weights must be in the
local Hugging Face cache or reachable); ``--threads 0`` leaves torch's thread count alone
(on CPU the default, 1 thread per worker, keeps two workers from fighting over two cores).
Each worker uses the GPU the usual CUDA rules give it; run one node per GPU.

**Layer costs with a fixed-latency stand-in** (``--standin SECONDS``): the workers serve
``--model standin:SECONDS`` (``webui.worker.pipelines.standin``: not a model; it sleeps SECONDS per job and
returns a real image of the asked size), so what each layer adds is not lost in a model's
variance or CPU contention. One node; at each of ``--sizes``, ``--requests`` sequential
requests per path from one client (no queueing), interleaved as above; in-process, the
generate call, the worker's PNG encode and the clients' PNG check (decode + pixel hash) are
timed apart. Two more paths split (d): (e) ``gradio_client`` given one TLS context for all its
requests, and (f) Gradio's queue protocol (join, SSE stream, download) spoken directly over one
keep-alive connection. Added ms per layer (p50/p99 differences): worker HTTP + encode = (b) - (a),
HAProxy = (c) - (b), web front + gradio_client = (d) - (c), web front alone = (f) - (c),
gradio_client alone = (d) - (f). The load average is taken before and after. Results go to
``bench/results/serving-layers.md``::

    python -m bench.serving --standin 0.5                       # 512 and 1024, 50 requests each
    python -m bench.serving --standin 0.2 --requests 15 --sizes 512 1024

**Duty cycle under saturating load** (``--standin SECONDS --saturation``): two clusters of two
stand-in nodes, one whose workers have no dispatch agent (one job per worker until its response
is sent, PNG encoding included: as before the agent) and one with it
(``webui/worker/dispatch_agent.py``). Each of ``--rounds`` rounds runs a ``--seconds`` phase per
cluster with 1 worker in rotation, then 2, ``--concurrency`` REST clients at ``--size``² back to
back. Per phase: jobs/s completed inside it, failed requests, and the duty cycle: the workers'
``portrait_worker_generating_seconds_total`` growth over the phase (its first second left out)
divided by its wall time and worker count. Results go to ``bench/results/serving-saturation.md``::

    python -m bench.serving --standin 1.0 --saturation --size 1024 --seconds 15 --rounds 2
"""
