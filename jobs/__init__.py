"""Jobs that outlive their clients: a job id for every generation, its durable record and results.

Rooms, lowest first (``tests/test_layering.py`` ``JOBS_ROOMS``): ``contract`` and ``errors`` (shared values,
domain errors), ``store`` (the durable store: tables, engine, migrations, the repository functions), then the
rooms built on it (webhooks, dispatch, the HTTP API). The package may import the node's contract
(``webui.contract``, ``webui.schema``); the node does not import it, and the balancer only its contract (the
balancer's sidecar runs ``python -m jobs`` and HAProxy routes ``/v1/jobs`` to it).
"""
