"""What each supervised process of the sidecar is: its command line, environment, log and probe.

``PartFactory`` builds one ``ProcessSupervisor`` (``balancer.supervision.supervisor``) per process: a
managed node's web front or worker (``NodeProcess``, or ``WorkerWithStandby`` with a warm standby),
HAProxy (``HAProxyChild``), keepalived and the jobs service (``python -m jobs``, a ``NodeProcess`` whose
server is the ``jobs`` backend's). A web front gets its own Gradio temp dir
(``RUN_DIR/gradio/NODE``); a worker with a ``gpu`` gets ``CUDA_VISIBLE_DEVICES=GPU`` and
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``balancer.config.gpus``); on a node host with ``tls`` every part serves
mutual TLS and is probed with the host's probe identity (``balancer.multihost.part_tls``).
"""

from __future__ import annotations

import sys

from balancer.config.basics import LOOPBACK
from balancer.config.cluster import ClusterSpec
from balancer.config.gpus import GPU_ENV
from balancer.config.jobs_service import JOBS_STORE_URL_ENV
from balancer.config.nodes import NodeSpec, PartSpec
from balancer.haproxy.config import PART_BACKENDS
from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.names import JOBS_BACKEND, JOBS_SERVER
from balancer.haproxy.process import HAProxyProcess
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.multihost.keepalived import KeepalivedChild
from balancer.multihost.part_tls import NodeHostTLS
from balancer.supervision.causes import DeathClassifier
from balancer.supervision.child import Child
from balancer.supervision.children import HAProxyChild, NodeProcess
from balancer.supervision.standby import WorkerWithStandby, standby_worker
from balancer.supervision.state import BALANCER, PartObserver, PartStatus
from balancer.supervision.supervisor import ProcessSupervisor
from webui.contract import BALANCED_QUEUE_SIZE
from webui.settings_common import COMPILE_CACHE_ENV, default_compile_cache_dir

PROBE_PATHS = {"web": "/healthz", "worker": "/readyz"}
"""What the sidecar probes: a worker is ready when its model is warm; a web front when it serves."""


def part_command(spec: ClusterSpec, node: NodeSpec, kind: str, part: PartSpec,
                 tls: NodeHostTLS | None = None) -> list[str]:
    """The command line of a managed node part (its own ``command`` if it has one); with ``tls`` (a node
    host's), it serves mutual TLS, and a web front presents that host's queue certificate to the worker queue."""
    if part.command:
        return list(part.command)
    common = ["--host", part.host, "--port", str(part.port), *(tls.server_args() if tls is not None else [])]
    if kind == "worker":
        dispatch = ["--dispatch-agent-port", str(part.dispatch_agent_port)] if part.dispatch_agent_port else []
        if dispatch and node.node_host is not None:
            dispatch += ["--dispatch-agent-host", LOOPBACK]  # asked by this host's host agent only
        jobs = spec.worker_flags(tls.host if tls is not None else None)  # its host's queue certificate
        return [sys.executable, "-m", "webui.worker", *common, "--node", node.name,
                "--queue-size", str(BALANCED_QUEUE_SIZE), *dispatch, *jobs, *part.args]
    web = spec.web_flags(node_host=tls.host if tls is not None else None)  # its host's queue certificate
    return [sys.executable, "-m", "webui.web", *common, "--node", node.name, *web, *part.args]


def jobs_command(spec: ClusterSpec) -> list[str]:
    """``python -m jobs`` on a balancer host: its listener, the run directory (the default SQLite store), the
    worker queue as this host's web fronts reach it (with their queue certificate when it is TLS), the slots (one
    per worker unless set) and times of the cluster file. The store's URL and the secret go in its environment."""
    jobs = spec.jobs
    command = [sys.executable, "-m", "jobs", "--host", jobs.host, "--port", str(jobs.port),
               "--run-dir", str(spec.run_dir), "--worker-queue-url", spec.worker_queue_url,
               "--dispatch-slots", str(jobs.dispatch_slots or max(1, len(spec.workers))),
               "--job-timeout", f"{jobs.job_timeout:g}", "--retention-days", f"{jobs.retention_days:g}",
               "--queue-wait", f"{spec.limits.queue_timeout:g}",
               "--worker-timeout", f"{spec.limits.generation_timeout:g}"]
    if spec.users_file is not None:
        command.append("--site-login")  # HAProxy checks the login, so its user name may name a job's owner
    if spec.tls is not None and spec.worker_queue_tls:
        command += ["--queue-ca", str(spec.tls.ca_file), "--queue-cert", str(spec.queue_client_cert(None))]
    if spec.tls is not None and jobs.peer_host:  # the other balancers' HAProxy, over mutual TLS
        command += ["--peer-host", jobs.peer_host, "--tls-cert", str(spec.tls.cert_file),
                    "--tls-ca", str(spec.tls.ca_file)]
    return command


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag VALUE`` (or ``flag=VALUE``) set to ``value``: replaced where it is, else added."""
    result, index, found = [], 0, False
    while index < len(args):
        arg = args[index]
        if arg == flag and index + 1 < len(args):
            result += [flag, value]
            index += 2
            found = True
            continue
        if arg.startswith(flag + "="):
            result.append(f"{flag}={value}")
            found = True
        else:
            result.append(arg)
        index += 1
    return result if found else [*result, flag, value]


def retry_command(spec: ClusterSpec, node: str, part: str) -> str:
    """The operator's command that retries a crash-looped part (the password left for them to fill in)."""
    return f"curl -u {spec.stats.user}:STATS_PASSWORD -X POST {spec.sidecar.url}/retry/{node}/{part}"


class PartFactory:
    """Builds the supervisor of each process the sidecar runs, all under the same settings, gate and metrics."""

    def __init__(self, spec: ClusterSpec, gate: HAProxyGate, env: dict[str, str], tls: NodeHostTLS | None,
                 classifier: DeathClassifier, metrics: PartObserver) -> None:
        self.spec, self.gate, self.env, self.tls = spec, gate, env, tls
        self.settings = spec.sidecar
        self.classifier, self.metrics = classifier, metrics

    def node_part(self, node: NodeSpec, kind: str, part: PartSpec) -> ProcessSupervisor:
        """The supervisor of a node's web front or worker (``kind``): its command, env, log, probe."""
        url = self.spec.part_url(node, part)
        status = PartStatus(node=node.name, part=kind, backend=PART_BACKENDS[kind], url=url)
        logs = self.spec.run_dir / "logs"
        own_env = {"PYTHONUNBUFFERED": "1"}
        private_dirs = [logs]
        if kind == "web" and "GRADIO_TEMP_DIR" not in part.env:
            # Gradio's uploads and generated images: private to this node, not the shared /tmp/gradio.
            gradio = self.spec.run_dir / "gradio"
            own_env["GRADIO_TEMP_DIR"] = str(gradio / node.name)
            private_dirs += [gradio, gradio / node.name]
        if kind == "worker" and part.gpu is not None:
            # Its own GPU, numbered as NVML and nvidia-smi number it; the part's env may say otherwise.
            own_env.update(CUDA_VISIBLE_DEVICES=str(part.gpu), **GPU_ENV)
        if kind == "worker":
            # One torch.compile cache for every worker of this host: a restart or standby reuses it.
            own_env[COMPILE_CACHE_ENV] = self.env.get(COMPILE_CACHE_ENV) or str(default_compile_cache_dir())
        child_env = {**self.env, **own_env, **part.env}
        if kind == "worker":
            status.gpu = child_env.get("CUDA_VISIBLE_DEVICES")
        command = part_command(self.spec, node, kind, part, self.tls)
        process = {
            "env": child_env, "log_path": logs / f"{node.name}-{kind}.log", "probe_url": url + PROBE_PATHS[kind],
            "probe_timeout": self.settings.probe_timeout, "stop_grace": self.settings.stop_grace, "gate": self.gate,
            "server": (PART_BACKENDS[kind], node.name), "private_dirs": tuple(private_dirs),
            "probe_tls": self.tls.probe(node.tls_name()) if self.tls is not None else None,
        }
        if kind == "worker" and part.standby:
            standby = standby_worker(f"{node.name}/{kind}", command, self.spec.run_dir, self.settings, process)
            status.standby = standby.snapshot
            child = WorkerWithStandby(f"{node.name}/{kind}", command, standby=standby, **process)
        else:
            child = NodeProcess(f"{node.name}/{kind}", command, **process)
        return self.supervise(status, child)

    def haproxy(self, haproxy: HAProxyProcess) -> ProcessSupervisor:
        """HAProxy's supervisor, probed over its runtime API."""
        status = PartStatus(node=BALANCER, part="haproxy", backend=None, url=self.spec.public.url)
        probe_api = AsyncRuntimeAPI(haproxy.socket_path, timeout=self.settings.probe_timeout)
        return self.supervise(status, HAProxyChild(haproxy, probe_api, self.gate))

    def keepalived(self, keepalived: KeepalivedChild) -> ProcessSupervisor:
        """keepalived's supervisor, on a balancer sharing a floating address."""
        status = PartStatus(node=BALANCER, part="keepalived", backend=None, url=keepalived.probe_target)
        return self.supervise(status, keepalived)

    def jobs(self) -> ProcessSupervisor:
        """The jobs service's supervisor, on a balancer host: probed on ``/healthz`` (HAProxy checks its
        ``/readyz``, whether the store answers), its server in the ``jobs`` backend set like a node part's."""
        jobs, logs = self.spec.jobs, self.spec.run_dir / "logs"
        env = {**self.env, "PYTHONUNBUFFERED": "1"}  # the cluster secret with it: never on the command line
        if jobs.store_url is not None:
            env.setdefault(JOBS_STORE_URL_ENV, jobs.store_url)  # the environment's (with a password) wins
        status = PartStatus(node=BALANCER, part="jobs", backend=JOBS_BACKEND, url=jobs.url)
        child = NodeProcess("balancer/jobs", jobs_command(self.spec), env, logs / "jobs.log", jobs.url + "/healthz",
                            self.settings.probe_timeout, self.settings.stop_grace, self.gate,
                            (JOBS_BACKEND, JOBS_SERVER), (logs,))
        return self.supervise(status, child)

    def supervise(self, status: PartStatus, child: Child) -> ProcessSupervisor:
        """A supervisor of ``child`` under the sidecar's settings, reporting to its metrics."""
        return ProcessSupervisor(
            status=status,
            child=child,
            settings=self.settings,
            classifier=self.classifier,
            metrics=self.metrics,
            retry_hint=retry_command(self.spec, status.node, status.part),
        )
