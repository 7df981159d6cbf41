"""The harness the benchmarks and the tests share.

- ``launched_cluster``: ``LaunchedCluster``, a whole cluster (``launch.py``) on free loopback ports; what it
  starts (``cluster_options``: ``ClusterOptions``, the cluster file) and what it reports (``cluster_status``).
- ``supervised``: ``SupervisedCluster``, HAProxy and the sidecar started apart, supervising given (stand-in) nodes.
- ``balancer``: HAProxy alone in front of nodes the caller runs (``cluster_data``, ``running_haproxy``).
- ``hosts_cluster``: ``HostsCluster``, node hosts in network namespaces; losing one mid-job: ``lost_host``
  (a REST job's host), ``lost_web_front`` (a UI client's web front's host).
- ``generation``: ``Job``, ``Reply`` and the checks every client makes of an answer (``CallFailed``, ``Rejected``).
- ``rest_client``, ``gradio_api_client``, ``browser_client`` (with ``page_events``): REST, gradio_client and
  browser-protocol clients of the public frontend.
- ``load``: bounded concurrent load with a record per request.
- ``processes``: processes we start and always stop (``Processes``, ``kill_tree``), free ports.
- ``waiting``: ``wait_http``, ``wait_until``.

The tests import it; it never imports the tests.
"""
