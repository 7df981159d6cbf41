"""``python -m balancer.deploy``: Kubernetes manifests for portrait-ha, from the same cluster file.

The command line: the cluster file and the deployment's choices (namespace, images, replicas) in, the
manifests (``balancer.deploy.manifests``) or only haproxy.cfg out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.deploy.kube_objects import APP
from balancer.deploy.manifests import ManifestRenderer


def main(argv: list[str] | None = None) -> int:
    """Print the manifests (or ``--haproxy-config``: only haproxy.cfg); exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m balancer.deploy", description=__doc__.splitlines()[0],
                                     epilog="Example: python -m balancer.deploy --cluster cluster.yaml "
                                     "--public-host studio.example.com --image registry/portrait-ha:1 "
                                     "> portrait-ha.yaml")
    parser.add_argument("--cluster", type=Path, help="Cluster YAML file: limits, health checks, ports, public_hosts "
                        "(its nodes are ignored: pods are found in DNS).")
    parser.add_argument("--public-host", action="append", default=[], help="The site's name (repeatable); "
                        "added to the cluster file's public_hosts.")
    parser.add_argument("--namespace", default=APP, help="Namespace for everything (default: %(default)s).")
    parser.add_argument("--image", default="portrait-ha:latest", help="The image of docker/Dockerfile.")
    parser.add_argument("--haproxy-image", default="haproxy:2.8", help="HAProxy 2.8 LTS image (default: %(default)s).")
    parser.add_argument("--model", default="awportrait-z", help="The workers' --model (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=2, help="Worker pods, one GPU each (default: %(default)s).")
    parser.add_argument("--webs", type=int, default=2, help="Web front pods (default: %(default)s).")
    parser.add_argument("--balancers", type=int, default=2, help="HAProxy pods (default: %(default)s).")
    parser.add_argument("--jobs", type=int, default=2, help="Jobs service pods (default: %(default)s); more than one "
                        "needs a PostgreSQL jobs.store_url.")
    parser.add_argument("--max-pods", type=int, default=16,
                        help="Server slots per kind in HAProxy: the most worker or web pods (default: %(default)s).")
    parser.add_argument("--worker-memory", default="64Gi", help="A worker pod's memory limit (default: %(default)s).")
    parser.add_argument("--cluster-domain", default="cluster.local", help="Kubernetes DNS domain.")
    parser.add_argument("--haproxy-config", action="store_true", help="Print only the balancer's haproxy.cfg.")
    args = parser.parse_args(argv)
    if min(args.workers, args.webs, args.balancers, args.jobs, args.max_pods) < 1:
        parser.error("--workers, --webs, --balancers, --jobs and --max-pods must be at least 1")
    try:
        data = load_cluster_file(args.cluster) if args.cluster else {}
        data["public_hosts"] = [*data.get("public_hosts", []), *args.public_host]
        data.pop("nodes", None)
        renderer = ManifestRenderer(
            parse_cluster(data), namespace=args.namespace, image=args.image, haproxy_image=args.haproxy_image,
            workers=args.workers, webs=args.webs, balancers=args.balancers, max_pods=args.max_pods,
            model=args.model, domain=args.cluster_domain, worker_memory=args.worker_memory, jobs=args.jobs,
        )
        sys.stdout.write(renderer.haproxy_config() if args.haproxy_config else renderer.render())
    except ClusterConfigError as exc:
        print(f"python -m balancer.deploy: {exc}", file=sys.stderr)
        return 2
    return 0
