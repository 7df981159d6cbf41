"""The public frontend's values: who the client is, what it may send, what each limit answers.

Every number, path list and answer the rules of ``templates/public.cfg.j2`` need is prepared here from
the ``ClusterSpec``; the template only places them.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer.config.cluster import ClusterSpec
from balancer.haproxy.answers import Answer, answer
from balancer.haproxy.names import (
    DIRECT_RUN_PATHS,
    JOBS_BACKEND,
    PAGE_RUN_PATH,
    PROBES_BACKEND,
    RATES_TABLE,
    WEBS_BACKEND,
    WORKERS_BACKEND,
)
from balancer.haproxy.syntax import duration
from jobs.contract import API_PREFIX, MAX_BODY_BYTES, RECIPES_PATH, SHARE_PREFIX
from webui.contract import (
    ADOPT_PATH,
    HEALTH_PATH,
    JOB_EVENT_INDICES,
    JOB_PATHS,
    METRICS_PATH,
    QUEUE_CANCEL_PATH,
    QUEUE_DATA_PATH,
    READY_PATH,
    TRAFFIC_PATH,
)


@dataclass(frozen=True)
class ClientLimits:
    """Per-client caps; 0 turns one off (its answer is then ``None``)."""

    connections: int
    by_address: bool
    """Counted per source address from accept on; else per request, by the trusted proxy's address."""
    too_many_connections: Answer | None
    rate: int
    rate_limited: Answer | None
    bodies: int
    too_many_bodies: Answer | None


@dataclass(frozen=True)
class Bodies:
    """Request body sizes: declared for every route, counted for REST jobs (which must fit the buffer) and the jobs
    API's submissions (the service's own limit, refused here before it is buffered)."""

    whole: int
    rest: int
    wait: str
    too_large: Answer
    rest_declared_too_large: Answer
    rest_too_large: Answer
    jobs: int
    jobs_declared_too_large: Answer
    jobs_too_large: Answer


@dataclass(frozen=True)
class Paths:
    """The paths the public rules name, each list space-separated for one ACL."""

    health: str = HEALTH_PATH
    ready: str = READY_PATH
    internal: str = f"{METRICS_PATH} {TRAFFIC_PATH} {ADOPT_PATH}"
    direct_run: str = " ".join(DIRECT_RUN_PATHS)
    page_run: str = PAGE_RUN_PATH
    rest: str = " ".join(JOB_PATHS)
    job_events: str = " ".join(map(str, JOB_EVENT_INDICES))
    jobs: str = API_PREFIX
    share: str = SHARE_PREFIX
    recipes: str = RECIPES_PATH
    queue_data: str = QUEUE_DATA_PATH
    queue_cancel: str = QUEUE_CANCEL_PATH


@dataclass(frozen=True)
class Public:
    """Everything ``templates/public.cfg.j2`` needs."""

    bind: str
    trusted_proxy: bool
    header_bytes: int
    headers_too_large: Answer
    bad_path: tuple[Answer, Answer]
    exact_hosts: str
    host_suffixes: str
    unknown_host: Answer
    not_found: Answer
    cross_site: tuple[Answer, Answer]
    unavailable: tuple[Answer, Answer]
    jobs: Answer
    """Where the jobs API goes when its service is down (or, ``jobs_routed`` false, when the cluster runs none)."""
    jobs_routed: bool
    rest_backend: str
    """Where REST generations go: the workers' queue, or the jobs service (``jobs.rest``), which records each."""
    rest_fallback: str
    """Where REST generations go while no worker is up ("" for nowhere: answered 503 at once): the jobs service,
    which holds each until the next worker is ready, when it runs but REST goes to the workers' queue."""
    record_rest: bool
    """Whether REST generations sent to the workers' queue are marked for their worker to record as jobs."""
    relay_streams: bool
    """Whether API clients' event streams go to the jobs service's stream relay (``ClusterSpec.relays_streams``)."""
    security_headers: bool
    limits: ClientLimits
    bodies: Bodies
    paths: Paths = Paths()


def public_values(spec: ClusterSpec, local_hosts: bool) -> Public:
    """The public frontend for ``spec``; ``local_hosts`` adds this machine's addresses to the allowed hosts."""
    limits = spec.limits
    allowed = spec.allowed_hosts(local_hosts)
    bad_path = "The path is not valid percent-encoding."
    cross_site = "Cross-site requests may not start jobs or upload files; use the page of this site or an API client."
    return Public(
        bind=f"{spec.public.host}:{spec.public.port}",
        trusted_proxy=limits.rate_limit_key == "x-forwarded-for",
        header_bytes=limits.max_header_bytes,
        headers_too_large=answer(431, "headers_too_large",
                                 f"The request headers are larger than {limits.max_header_bytes} bytes.",
                                 f"{{ req.hdrs,length gt {limits.max_header_bytes} }}", "Request headers too large"),
        bad_path=(answer(400, "bad_path", bad_path, "!{ var(txn.path) -m found }", "Bad path"),
                  answer(400, "bad_path", bad_path, "{ path -m sub %00 }", "Bad path")),
        exact_hosts=" ".join(host for host in allowed if not host.startswith(".")),
        host_suffixes=" ".join(host for host in allowed if host.startswith(".")),
        unknown_host=answer(421, "unknown_host", "This server does not serve that host name.", "!known_host",
                            "Unknown host"),
        not_found=answer(404, "not_found", "Not found.", "internal !page_run", "Not found"),
        cross_site=(answer(403, "cross_site_request", cross_site, "is_guarded cross_site",
                           "Cross-site request refused"),
                    answer(403, "cross_site_request", cross_site, "is_guarded has_origin !same_origin",
                           "Cross-site request refused")),
        unavailable=(answer(503, "unavailable", "The studio is starting or restarting; this page reloads by itself.",
                            f"!is_rest !is_jobs {{ nbsrv({WEBS_BACKEND}) eq 0 }}", "Starting up",
                            headers="hdr Retry-After 5", refresh=3),
                     rest_unavailable(spec)),
        jobs=jobs_answer(spec),
        jobs_routed=spec.jobs.enabled,
        rest_backend=JOBS_BACKEND if spec.rest_via_jobs else WORKERS_BACKEND,
        rest_fallback=JOBS_BACKEND if spec.jobs.enabled and not spec.rest_via_jobs else "",
        record_rest=spec.workers_record_jobs,
        relay_streams=spec.relays_streams,
        security_headers=spec.security_headers,
        limits=client_limits(spec),
        bodies=bodies(spec),
    )


def rest_unavailable(spec: ClusterSpec) -> Answer:
    """REST's answer when what serves it is down: no worker up (and no jobs service up to hold the job while the
    cluster runs one), or (``jobs.rest``) no jobs service up; a job the jobs service accepted waits for the next
    ready worker instead."""
    if spec.rest_via_jobs:
        return answer(503, "unavailable", "The jobs service is starting or restarting; retry shortly.",
                      f"is_rest {{ nbsrv({JOBS_BACKEND}) eq 0 }}", "Jobs service unavailable",
                      headers="hdr Retry-After 5")
    no_fallback = f" {{ nbsrv({JOBS_BACKEND}) eq 0 }}" if spec.jobs.enabled else ""
    return answer(503, "unavailable", "No worker is up right now (starting or restarting); retry shortly.",
                  f"is_rest {{ nbsrv({PROBES_BACKEND}) eq 0 }}{no_fallback}", "No worker is up",
                  headers="hdr Retry-After 5")


def jobs_answer(spec: ClusterSpec) -> Answer:
    """The jobs API's answer while its service is not up, or always where the cluster runs none."""
    if not spec.jobs.enabled:
        return answer(404, "not_found", "This site runs no jobs service (jobs.enabled is off in its cluster file).",
                      "is_jobs", "Not found")
    return answer(503, "unavailable", "The jobs service is starting or restarting; retry shortly.",
                  f"is_jobs {{ nbsrv({JOBS_BACKEND}) eq 0 }}", "Jobs service unavailable", headers="hdr Retry-After 5")


def client_limits(spec: ClusterSpec) -> ClientLimits:
    """The per-client connection, generation rate and body caps."""
    connections, rate = spec.max_client_connections, spec.rate_limit_per_minute
    bodies = spec.limits.max_client_bodies
    return ClientLimits(
        connections=connections,
        by_address=spec.limits.rate_limit_key == "src",
        too_many_connections=answer(
            429, "too_many_connections", f"At most {connections} concurrent connections per client; close some "
            "and retry.", f"{{ sc_conn_cur(0) gt {connections} }}", "Too many connections",
            headers="hdr Retry-After 5") if connections else None,
        rate=rate,
        rate_limited=answer(
            429, "rate_limited", f"At most {rate} generations a minute per client; retry later.",
            f"is_job {{ var(txn.client),table_http_req_rate({RATES_TABLE}) ge {rate} }}", "Too many requests",
            headers="hdr Retry-After 60") if rate else None,
        bodies=bodies,
        too_many_bodies=answer(
            429, "too_many_bodies", f"At most {bodies} requests with a body at once per client; wait for one to "
            "finish.", f"has_body {{ sc_conn_cur(6) gt {bodies} }}", "Too many uploads",
            headers="hdr Retry-After 5") if bodies else None,
    )


def bodies(spec: ClusterSpec) -> Bodies:
    """The body size caps and their answers."""
    limits = spec.limits
    whole, rest = limits.max_body_bytes, limits.rest_body_bytes
    rest_detail = f"A REST job body may be at most {rest} bytes; send larger photos through the Gradio API."
    jobs_detail = f"A job body may be at most {MAX_BODY_BYTES} bytes."
    return Bodies(
        whole=whole,
        rest=rest,
        wait=duration(limits.request_timeout),
        too_large=answer(413, "request_too_large", f"The request body is larger than {whole} bytes.",
                         f"{{ req.hdr_val(content-length) gt {whole} }}", "Request too large"),
        rest_declared_too_large=answer(413, "request_too_large", rest_detail,
                                       f"is_rest {{ req.hdr_val(content-length) gt {rest} }}", "Request too large"),
        rest_too_large=answer(413, "request_too_large", rest_detail, f"is_rest {{ req.body_len gt {rest} }}",
                              "Request too large"),
        jobs=MAX_BODY_BYTES,
        jobs_declared_too_large=answer(413, "request_too_large", jobs_detail,
                                       f"is_jobs {{ req.hdr_val(content-length) gt {MAX_BODY_BYTES} }}",
                                       "Request too large"),
        jobs_too_large=answer(413, "request_too_large", jobs_detail,
                              f"is_jobs {{ req.body_len gt {MAX_BODY_BYTES} }}", "Request too large"),
    )
