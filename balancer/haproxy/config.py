"""Render ``haproxy.cfg`` from a ``ClusterSpec``: typed values (``values.py``) fill a Jinja2 template.

The layout (``templates/haproxy.cfg.j2``, one included file per part):

- ``frontend public``: browsers, ``gradio_client`` and REST. ``/generate`` and
  ``/generate/stream`` go to the ``workers`` backend, everything else to ``webs``.
- ``frontend worker_queue``: the private address web fronts send their jobs to; probes go to
  ``worker_probes`` so that they never queue behind jobs.
- ``backend webs``: sticky Gradio sessions (cookie, then the stale cookie's value, then the
  Gradio ``session_hash``).
- ``backend workers``: least-loaded worker, one job per worker, HAProxy's queue as the
  cluster-wide FIFO, L7 retries that replay a job whose worker died.
- ``frontend stats``: password-protected stats page and Prometheus exporter on loopback.

The rendered file says in one line why each directive (or small group) is there; the reasoning,
measurements and history are in docs/haproxy.md. Validate the result with
``balancer.haproxy.process.validate_config`` (``haproxy -c``) before use.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache

import jinja2

from balancer.config.cluster import ClusterSpec
from balancer.haproxy.names import (
    BODIES_TABLE,
    COOKIE_NAME,
    COOKIE_OPTIONS,
    DIRECT_RUN_PATHS,
    PAGE_RUN_PATH,
    PART_BACKENDS,
    PROBES_BACKEND,
    RATES_TABLE,
    STICK_COUNTERS,
    STICKY_TABLE,
    WEBS_BACKEND,
    WORKERS_BACKEND,
)
from balancer.haproxy.servers import DynamicServer, ServerSet, StaticServers, check_options
from balancer.haproxy.syntax import config_path_arg, duration
from balancer.haproxy.users import User, read_users_file
from balancer.haproxy.values import HAProxyValues, values_from_spec

__all__ = [
    "BODIES_TABLE", "COOKIE_NAME", "COOKIE_OPTIONS", "DIRECT_RUN_PATHS", "PAGE_RUN_PATH", "PART_BACKENDS",
    "PROBES_BACKEND", "RATES_TABLE", "STICK_COUNTERS", "STICKY_TABLE", "WEBS_BACKEND", "WORKERS_BACKEND",
    "DynamicServer", "HAProxyConfigRenderer", "ServerSet", "StaticServers", "User", "check_options",
    "config_path_arg", "duration", "read_users_file", "render_config", "render_values",
]

TEMPLATE = "haproxy.cfg.j2"


@cache
def _environment() -> jinja2.Environment:
    """The templates next to this module: strict (a missing value is an error), no HTML escaping."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("balancer.haproxy", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_values(values: HAProxyValues) -> str:
    """The text of ``haproxy.cfg`` for prepared ``values``."""
    context = {field.name: getattr(values, field.name) for field in fields(values)}  # shallow: keeps the dataclasses
    return _environment().get_template(TEMPLATE).render(**context)


class HAProxyConfigRenderer:
    """Turns one ``ClusterSpec`` into the text of ``haproxy.cfg``.

    ``servers`` gives the node server lines (default: the spec's nodes); ``local_hosts`` adds this
    machine's addresses to the allowed Host headers when the public listener binds every interface.
    """

    def __init__(self, spec: ClusterSpec, servers: ServerSet | None = None, local_hosts: bool = True) -> None:
        self.spec = spec
        self.servers = servers or StaticServers(spec)
        self.local_hosts = local_hosts

    def values(self) -> HAProxyValues:
        """What the template is filled from."""
        return values_from_spec(self.spec, self.servers, self.local_hosts)

    def render(self) -> str:
        """The whole configuration file."""
        return render_values(self.values())


def render_config(spec: ClusterSpec) -> str:
    """The text of ``haproxy.cfg`` for ``spec``."""
    return HAProxyConfigRenderer(spec).render()
