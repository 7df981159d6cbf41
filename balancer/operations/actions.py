"""The operator's operations, started from the sidecar's API: ``POST /rolling-restart``, ``POST /add-node``,
``POST /remove-node/NODE``, and their report (``GET /operation``); one at a time (``OperationRunner``)."""

from __future__ import annotations

from balancer.config.cluster import ClusterSpec
from balancer.operations.node_changes import AddNode, AddNodeRequest, RemoveNode, RemoveNodeRequest
from balancer.operations.nodes import ManagedNodes
from balancer.operations.rolling import RollingRestart, RollingRestartRequest
from balancer.operations.runner import OperationError, OperationRunner, parse_request


class OperatorActions:
    """Starts an operator's operation on the managed nodes; each answers its report (``OperationError`` when
    it cannot start, ``OperationBusy`` while another runs)."""

    def __init__(self, spec: ClusterSpec, nodes: ManagedNodes) -> None:
        self.spec, self.settings, self.nodes = spec, spec.sidecar, nodes
        self.operations = OperationRunner()
        """The operator's operations, one at a time."""

    def start_rolling_restart(self, body: object) -> dict:
        """Start a rolling restart (``POST /rolling-restart``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body, RollingRestartRequest)
        if self.nodes.traffic is None:
            raise OperationError("no HAProxy runtime API and no host agent: a rolling restart waits on the "
                                 "requests in flight, which nothing here counts")
        if request.model or request.lora:
            fixed = [node.name for node in self.spec.nodes
                     if node.managed and node.worker is not None and node.worker.command]
            if fixed:
                raise OperationError(f"workers {fixed} run their own command: --model/--lora cannot change it")
        operation = RollingRestart(self.nodes, request, ready_timeout=self.settings.start_timeout,
                                   handoff=self.spec.jobs.enabled and self.spec.jobs.web_fronts)
        return self.operations.start("rolling-restart", operation.run).document()

    def start_add_node(self, body: object) -> dict:
        """Start adding a node (``POST /add-node``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body, AddNodeRequest)
        if self.nodes.view_api is None or self.nodes.node_host is not None:
            raise OperationError("no HAProxy runtime API: adding a node adds its servers to HAProxy")
        self.operations.check_free()
        node = self.nodes.next_node(request.gpu)
        operation = AddNode(self.nodes, node, request.ready_timeout or self.settings.start_timeout)
        return self.operations.start("add-node", operation.run).document()

    def start_remove_node(self, node: str, body: object) -> dict:
        """Start removing ``node`` (``POST /remove-node/NODE``): its report; ``OperationError`` when it cannot."""
        request = parse_request(body, RemoveNodeRequest)
        if self.nodes.view_api is None or self.nodes.node_host is not None:
            raise OperationError("no HAProxy runtime API: removing a node deletes its servers from HAProxy")
        if node not in self.nodes.managed_nodes():
            raise OperationError(f"no managed node {node!r} (see ctl status)")
        if self.nodes.managed_nodes() == [node]:
            raise OperationError(f"{node} is the last managed node: the cluster would have none left")
        self.operations.check_free()
        return self.operations.start("remove-node", RemoveNode(self.nodes, node, request).run).document()

    def operation(self) -> dict | None:
        """The report of the running or last operation (``GET /operation``)."""
        return self.operations.last.document() if self.operations.last is not None else None
