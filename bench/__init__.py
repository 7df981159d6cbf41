"""portrait-ha benchmarks: serving overhead, failover under load, and a bounded soak.

Each benchmark is one command that starts its own cluster on loopback, measures, prints a
Markdown table and writes it with a plot under ``bench/results/``:

- ``python -m bench.serving``: latency per serving path and 1-vs-2-worker throughput.
- ``python -m bench.failover``: worker kill, web-front kill and OOM under a bounded load.
- ``python -m bench.soak``: minutes of mixed traffic with random worker kills, RSS checks.
- ``python -m bench.gpu`` (CUDA only, no cluster, a Markdown table only): real-size latency, memory and
  out-of-memory limits on the Z-Image-Turbo architecture twin, bare diffusers vs the serving path.

Benchmark plumbing: ``report`` (statistics, tables, result files, plots), ``cli`` (the flags
every benchmark has). ``harness``, which the tests use too: ``launched_cluster`` (start ``launch.py``;
``cluster_options``, ``cluster_status``: what it starts, what its sidecar and HAProxy say), ``generation``
(``Job``, ``Reply``, the checks of an answer), ``rest_client``, ``gradio_api_client`` and ``browser_client``
(REST, gradio_client and browser-protocol clients), ``load`` (bounded concurrent load with per-request
records), ``processes`` (processes we start and always stop, free ports), ``waiting``.

Dependencies point one way: the tests import ``bench``, ``bench`` never imports the tests.
"""
