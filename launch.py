"""Start the whole portrait-ha cluster with one command.

    python launch.py                     # 2 nodes on the offline demo model, http://127.0.0.1:8080
    python launch.py --model awportrait-z   # on a GPU box: one node per GPU NVML sees (--gpus auto)
    python launch.py --gpus 0,1 --workers-per-gpu 2 --model awportrait-z   # 4 nodes, 2 per GPU
    python launch.py --nodes 3 --host 0.0.0.0 --auth-users-file users.txt
    python launch.py --cluster assets/cluster.example.yaml
    python launch.py --cluster hosts.yaml --role balancer       # HAProxy + sidecar, nodes on node hosts
    python launch.py --cluster hosts.yaml --role node           # on each node host (see README)
    python launch.py --cluster pair.yaml --role balancer        # on each of two balancers (floating address)
    python launch.py --help

It renders HAProxy's configuration from the cluster description and checks it with
``haproxy -c`` (exit status 2 and HAProxy's alerts if it is rejected), then runs the sidecar
(``balancer.sidecar``), which supervises everything on one event loop: HAProxy first (exit
status 2 if it does not start), then every managed node (worker + web front); it restarts
whatever dies, HAProxy included, and keeps HAProxy told which servers may take traffic. It
prints the public URL and the stats URL once HAProxy is up. The sidecar owns SIGINT and
SIGTERM: on either, servers are drained, node processes stopped, HAProxy stopped last, and
launch.py exits 0.

``--role`` splits this over machines, all from one cluster file: ``balancer`` runs HAProxy and
its sidecar only; ``node`` runs one node host's nodes under a sidecar without HAProxy, which
answers HAProxy's agent checks (``balancer.multihost.host_agent``) so that every balancer learns each part's state.
With ``floating`` and ``balancers`` in the cluster file, each balancer (``--role balancer`` or
``all``) also runs keepalived, which moves the floating address to a healthy balancer
(``balancer.multihost.keepalived``; root, ``--balancer NAME`` unless its address tells). Every balancer also
runs the jobs service (``python -m jobs``, the cluster file's ``jobs``; docs/jobs.md), reached at ``/v1/jobs``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from pydantic import ValidationError
from pydantic_settings import CliApp

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.jobs_peers import store_is_shared, with_jobs_peers
from balancer.config.jobs_service import JOBS_STORE_URL_ENV
from balancer.config.nodes import BalancerHostSpec, NodeSpec
from balancer.config.settings import LaunchSettings, secret_flag_problem
from balancer.haproxy.config import render_config
from balancer.haproxy.process import HAProxyError, HAProxyProcess, validate_config, write_config
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.multihost.keepalived import KeepalivedChild, KeepalivedError, write_keepalived_config
from balancer.sidecar import Sidecar, configure_logging, run_sidecar
from balancer.supervision.child import StartFailed
from balancer.system.cluster_secret import children_env, prepare_cluster_secret
from balancer.system.run_dir import prepare_run_dir
from webui.contract import PRIVATE_UMASK
from webui.settings_common import settings_problems
from webui.share import ShareTunnel

logger = logging.getLogger("launch")


async def run_cluster(spec: ClusterSpec, haproxy: HAProxyProcess, share: ShareTunnel | None,
                      nodes: list[NodeSpec] | None = None, keepalived: KeepalivedChild | None = None,
                      env: dict[str, str] | None = None) -> None:
    """Run the sidecar (HAProxy, then ``nodes``: the local ones unless given, and ``keepalived``) until
    SIGINT/SIGTERM; the banner once HAProxy is up. ``env``: the parts' environment (default: this process's)."""
    sidecar = Sidecar(spec, AsyncRuntimeAPI(spec.socket_path), base_env=env, haproxy=haproxy, nodes=nodes,
                      keepalived=keepalived)

    async def announce() -> None:
        assert sidecar.balancer is not None
        await sidecar.balancer.started.wait()
        print_banner(spec, share, local=nodes is None)

    announcing = asyncio.create_task(announce())
    try:
        await sidecar.run()
    finally:
        announcing.cancel()


def open_share(spec: ClusterSpec) -> ShareTunnel | None:
    """A public share link to the balancer's public frontend (not to one node); None if it failed."""
    if spec.users_file is None:
        logger.warning("the share link is public and the site has no password: consider --auth-users-file")
    tunnel = ShareTunnel(spec.public.connect_host, spec.public.port)
    try:
        tunnel.open()
    except Exception as exc:  # Gradio's tunnel raises many kinds (network, checksum, platform)
        logger.error("could not open a share link (the cluster runs without one): %s", exc)
        return None
    return tunnel


def warn_if_jobs_apart(spec: ClusterSpec) -> None:
    """Say so when several balancer hosts would each keep their own jobs (SQLite) instead of sharing a store."""
    if spec.jobs.enabled and spec.balancers and not store_is_shared(spec.jobs, os.environ):
        logger.warning("jobs: every balancer keeps its jobs in its own SQLite file, so a job accepted on one is "
                       "unknown to the others after the floating address moves; set jobs.store_url to a shared "
                       "PostgreSQL (its password in %s)", JOBS_STORE_URL_ENV)


def warn_if_exposed(spec: ClusterSpec) -> None:
    """Say what protects a cluster reachable from other machines, and what is missing."""
    if not spec.exposed:
        return
    logger.warning(
        "the public site is exposed (listens on %s%s): per client %s generations a minute and %s connections at "
        "once (0 = unlimited; see limits in --cluster)", spec.public.host, ", share link" if spec.shared else "",
        spec.rate_limit_per_minute,
        spec.max_client_connections,
    )
    if spec.users_file is None:
        logger.warning("the public site has no password: anyone who reaches %s:%d can use the GPUs; "
                       "set --auth-users-file or put an authenticating proxy in front", spec.public.host,
                       spec.public.port)
    logger.warning("HAProxy speaks plain HTTP here: terminate TLS in front of it before exposing it to the internet")


def run_node_host(spec: ClusterSpec, name: str | None, env: dict[str, str] | None = None) -> int:
    """``--role node``: this node host's nodes (in ``env``) under a sidecar whose host agent answers the balancers."""
    host = spec.node_host(name) if name else spec.this_node_host()
    sidecar = Sidecar(spec, None, base_env=env, node_host=host)
    nodes = [node.name for node in spec.nodes_on(host.name)]
    serving = (f"mutual TLS with {sidecar.nodes.tls.server_cert}, balancers' certificates only" if sidecar.nodes.tls
               else "plain HTTP (no tls in the cluster file: keep this network private)")
    print(f"\nportrait-ha node host {host.name}: {len(nodes)} node(s) starting ({', '.join(nodes) or 'none'})\n"
          f"  Parts:      {serving}\n"
          f"  Host agent: {host.address}:{host.host_agent_port}   (every balancer reads the states)\n"
          f"  Sidecar:    {spec.sidecar.url}/status\n  Logs:       {spec.run_dir}/logs\n", flush=True)
    return run_sidecar(sidecar)


def floating_keepalived(spec: ClusterSpec, me: BalancerHostSpec | None) -> KeepalivedChild | None:
    """keepalived for balancer ``me`` when the cluster file names a floating address (checked config), else None."""
    if spec.floating is None or me is None:
        return None
    config = write_keepalived_config(spec, me)
    logger.info("balancer %s (priority %d) shares %s with %s through keepalived (%s)", me.name, me.priority,
                spec.floating.address, ", ".join(b.name for b in spec.balancers if b.name != me.name), config)
    return KeepalivedChild(spec, config)


def print_banner(spec: ClusterSpec, share: ShareTunnel | None, local: bool = True) -> None:
    """Where to find the cluster, on stdout (``local``: whether this host runs the local nodes)."""
    managed = [node.name for node in spec.nodes_on(None)] if local else []
    remote = [node.name for node in spec.nodes if node.name not in managed]
    lines = [
        "",
        f"portrait-ha: {len(managed)} local node(s) starting" + (f", {len(remote)} remote" if remote else ""),
        f"  URL:     {spec.public.url}   (browser, gradio_client, REST POST /generate)",
    ]
    if share is not None:
        lines.append(f"  Public:  {share.url}   (share link to the balancer)")
    lines += [
        f"  Stats:   {spec.stats.url}/   user {spec.stats.user}, password {spec.stats.password.get_secret_value()}"
        f"   (Prometheus: {spec.stats.url}/metrics)",
        *([f"  Jobs:    {spec.public.url}/v1/jobs   (durable jobs; OpenAPI: {spec.public.url}/v1/jobs/docs)"]
          if spec.jobs.enabled else []),
        f"  Sidecar: {spec.sidecar.url}/status",
        f"  Logs:    {spec.run_dir}/logs, {spec.run_dir}/haproxy.log",
        "Nodes join the rotation as their models finish loading. Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python launch.py``."""
    os.umask(PRIVATE_UMASK)  # logs, images and caches written by us and our children: this user's only
    problem = secret_flag_problem(sys.argv[1:] if argv is None else argv)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        settings = CliApp.run(LaunchSettings, cli_args=argv)
    except ValidationError as exc:
        print(f"error: {settings_problems(exc)}", file=sys.stderr)
        return 2
    configure_logging()
    try:
        spec = settings.cluster_spec()
        prepare_run_dir(spec.run_dir)
        env = children_env(prepare_cluster_secret(spec, node_host=settings.role == "node"))
        if settings.role == "node":
            return run_node_host(spec, settings.node_host, env)
        spec.check_own_certificate(None)
        me = spec.balancer(settings.balancer) if spec.floating is not None else None
        if me is not None:
            spec = with_jobs_peers(spec, me, os.environ)
        validate_config(write_config(render_config(spec), spec.config_path), env=env)
        haproxy = HAProxyProcess(spec.config_path, spec.socket_path, spec.run_dir / "haproxy.log", env=env)
        keepalived = floating_keepalived(spec, me)
    except (ClusterConfigError, HAProxyError, KeepalivedError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warn_if_exposed(spec)
    warn_if_jobs_apart(spec)
    if settings.role == "balancer" and spec.nodes_on(None):
        logger.warning("--role balancer runs no node: %s will only be health-checked",
                       ", ".join(node.name for node in spec.nodes_on(None)))
    share = None
    try:
        if settings.share:
            share = open_share(spec)
        asyncio.run(run_cluster(spec, haproxy, share, nodes=[] if settings.role == "balancer" else None,
                                keepalived=keepalived, env=env))
    except StartFailed as exc:  # HAProxy did not start: nothing else was started
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the sidecar's event loop took the signals over
        logger.info("interrupted")
    finally:
        if share is not None:
            share.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
