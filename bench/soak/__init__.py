"""Bounded soak: minutes of mixed traffic with random worker kills; nothing lost, nothing leaks.

    python -m bench.soak                      # 3 minutes, 2 worker kills, 5 clients
    python -m bench.soak --seconds 600 --kills 5
    pytest -m soak                            # the same, as a test (tests/test_soak.py)

It starts its own cluster (``launch.py``, 2 nodes, loopback, free ports) and keeps it busy
through HAProxy's public frontend with:

- browser tabs: the studio page's own protocol (cookie, ``/config``, queue join + SSE with
  progress, image download from the node); each tab is reopened every few jobs, like a
  person reloading the page;
- one ``gradio_client.Client`` reused for the whole soak (it keeps its first cookie, even
  after its node died);
- REST ``POST /generate`` clients.

A share of requests (``--malformed``, default 15 %) is deliberately bad: each client type
picks from its own catalogue (steps 0, a width that is not a multiple of 16, an unknown
field, broken JSON, ...) and the request must be refused with a readable message naming the
field, never a traceback. ``--kills`` times a random worker (the busy one when a job is
running) is SIGKILLed, at random moments at least ``--kill-gap`` seconds apart and only
while every node is UP.

Memory: every process of the cluster (launch.py, HAProxy, sidecar, web fronts, workers) is
sampled every ``--rss-interval`` seconds. A process is judged when it ran at least
``--judge-span`` seconds after its warm-up (``--warmup`` seconds after it first appeared):
its growth is the median of its last 3 samples minus the median of its first 3 after warm-up.
**Bound: growth at most ``--rss-bound-pct`` % (15) of its warmed-up RSS, and never more than
``--rss-bound-mb`` MB (150).**

Pass = zero lost good requests, every malformed request refused readably, every node part
UP in HAProxy at the end, every judged process within the memory bound. Writes
``bench/results/soak.md`` and ``soak.png``; exits 1 when the soak failed.

On a GPU machine: ``python -m bench.soak --model awportrait-z --threads 0 --size 1024 --seconds 1800``.
"""
