"""The harness the benchmarks and the tests share.

- ``cluster``: ``LaunchedCluster``, a whole cluster (``launch.py``) on free loopback ports.
- ``supervised``: ``SupervisedCluster``, HAProxy and the sidecar started apart, supervising given (stand-in) nodes.
- ``balancer``: HAProxy alone in front of nodes the caller runs (``cluster_data``, ``running_haproxy``).
- ``hosts``: ``HostsCluster``, node hosts in network namespaces.
- ``generation``: ``Job``, ``Reply`` and the checks every client makes of an answer (``CallFailed``, ``Rejected``).
- ``rest_client``, ``gradio_api_client``, ``browser_client`` (with ``page_events``): REST, gradio_client and
  browser-protocol clients of the public frontend.
- ``load``: bounded concurrent load with a record per request.
- ``processes``: processes we start and always stop (``Processes``, ``kill_tree``), free ports.
- ``waiting``: ``wait_http``, ``wait_until``.

The tests import it; it never imports the tests.
"""
