"""Failover benchmark: a bounded load while a worker dies, a worker hangs, a web front dies, an OOM,
and then an operator's rolling restart restarts every node.

    python -m bench.failover                      # demo model, 4 clients, at most 480 s
    python -m bench.failover --clients 6 --seconds 600

It starts its own cluster (``launch.py``, 2 nodes, loopback, free ports) and runs a mixed
load through HAProxy's public frontend: REST ``/generate`` clients, one reused
``gradio_client.Client`` and one browser-protocol client (what the studio page does; these two
wait ``--think-time`` seconds between jobs, as a person does). While the load runs it causes
four failures and one planned restart, one after the other, each once the cluster is whole
again:

1. **worker SIGKILL**: the worker that is generating right now (its ``/readyz`` says busy),
   killed by its PID from the sidecar's ``/status``;
2. **worker hang**: the worker that is generating right now, SIGSTOPped (frozen: alive, answers
   nothing, uses no CPU); the sidecar must find it hung, kill it (``maint`` first, so "to DOWN"
   is the detection time) and restart it, and its job must finish on the other worker;
3. **web front SIGKILL**: the web front the reused ``gradio_client`` is stuck to;
4. **OOM**: a job with the fault-injection marker sent to the last worker, started with
   ``PORTRAIT_FAULT_OOM_AT_STEP`` and ``--max-consecutive-ooms 1``: it fails that job with
   507 (expected, not counted) and exits with ``EXIT_OOM`` for the sidecar to restart;
5. **rolling restart**: ``python -m balancer.cli rolling-restart`` (``balancer.operations``):
   node by node, drained, restarted, back; its row's "back UP" is the whole operation.

A monitor polls HAProxy's runtime API (``show stat``) every 50 ms. For each failure it
reports the good requests that failed, the time until HAProxy marked the server
DOWN/MAINT, the time until it was back UP in rotation, and the latency of requests that
started during the recovery compared with before the first failure. The timeline
(``bench/results/failover.png``) plots every request's latency over time above each
server's HAProxy state. "In-flight extra s" is the slowest request in flight at the failure
minus the median before any failure: what the failure cost the job it hit. Bounded:
``--seconds`` caps the run, ``--max-requests`` each client.

"Back to full capacity" is the time from the failure until every server is UP again (both
workers serving). ``--standby`` gives every worker a warm standby (``balancer.supervision.standby``): the
benchmark waits until each is loaded before each failure, reports their resident memory, and
writes ``bench/results/failover-standby.md`` (and ``.png``) instead.

On a GPU machine with a real model (recovery includes model load time)::

    python -m bench.failover --model awportrait-z --steps 8 --size 1024 --threads 0 --seconds 600
"""
