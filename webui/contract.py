"""The contract between portrait-ha's processes: what workers, web fronts, HAProxy's config and
the supervisor must agree on. Each value lives here once; every side imports it from here
(the balancer imports the node's contract, never the other way round).
"""

from __future__ import annotations

import re
import signal

# --- exit codes: how a worker tells its supervisor why it stopped
EXIT_OOM = 86
"""The worker ran out of memory repeatedly (or its self-check after an OOM failed): restart it."""
EXIT_LOAD_FAILED = 87
"""The model could not be loaded (missing, unreachable or malformed): a restart will not help soon."""

# --- the worker's HTTP API
JOB_PATHS = ("/generate", "/generate/stream")
"""Routes that run a job: HAProxy sends them to the workers' queue."""
JOB_EVENT_INDICES = (1, 2, 3, 4)
"""``fn_index`` of the studio page's events that run a job (after the examples' loader): a ``queue/join``
naming one counts against HAProxy's per-client generation rate (``tests/test_web.py`` ties them to the page)."""
HEALTH_PATH = "/healthz"
"""Liveness: the process serves HTTP."""
READY_PATH = "/readyz"
"""Readiness: the process can do its job now (a worker: model loaded and warm)."""
STALLED_KEY = "stalled"
"""Key of a worker's ``/readyz`` body: null, or (with a 503) the sentence saying its generation thread
made no denoising step for far longer than usual; the sidecar then kills it (cause ``hung``)."""
INFO_PATH = "/info"
"""A worker's model and limits (what the studio page offers), answered while it generates."""
METRICS_PATH = "/metrics"
"""Prometheus text format."""
TRAFFIC_PATH = "/traffic"
"""A part's HTTP requests in flight and so far, in all and per persistence cookie value (JSON,
``webui.traffic``): what a node host's sidecar waits on in a rolling restart (it has no HAProxy to ask).
Not served to the public (HAProxy answers 404)."""
HEARTBEAT_PREFIX = "/gradio_api/heartbeat/"
"""Gradio's page-presence stream: open as long as a page is, never part of a job. Not counted as a node's
traffic (``webui.traffic``, HAProxy's sticky table): it would hold a drained node forever."""
MINIMAL_RESULT = "return=minimal"
"""A job request's ``Prefer`` header (RFC 7240) for a result without ``image``, the first image again for
older scripts: a third fewer bytes for one image. The worker answers ``Preference-Applied`` when it took it;
the web fronts ask for it. A header, not a job field: a worker from before it ignores it (a field: 422)."""
PERSISTENCE_COOKIE = "PORTRAIT_NODE"
"""The cookie HAProxy inserts to keep a client on one web front; its value is the node name."""
STICKY_NODE_HEADER = "X-Portrait-Sticky-Node"
"""HAProxy's copy of the persistence cookie's value for the node (which never sees the cookie itself)."""
CLUSTER_SECRET_ENV = "PORTRAIT_CLUSTER_SECRET"
"""The cluster secret, handed to every part in its environment (never on a command line): unset, a part lets
anyone in (a worker run by hand)."""
CLUSTER_SECRET_HEADER = "X-Portrait-Cluster"
"""Carries the cluster secret to a worker and to the worker queue: HAProxy adds it, web fronts send it."""
CLUSTER_SECRET_FILE = "cluster.secret"
"""The cluster secret's file in the run directory (mode 600): for local tools that call workers directly."""
NOT_A_PART = ("not_a_cluster_part", "This port is internal to the cluster: send jobs to the public address of the "
              "studio.")
"""The error and its sentence for a request without the cluster secret (403, from a worker or the worker queue)."""
OPEN_PATHS = (HEALTH_PATH, READY_PATH, METRICS_PATH, TRAFFIC_PATH)
"""A node part's routes that need no cluster secret: probes and counters, which run nothing."""
RETRYABLE_STATUSES = (502, 503, 504)
"""Nothing ran: the same job may be sent again, to this or another worker (HAProxy's retry-on, the web front)."""
OUT_OF_MEMORY_STATUS = 507
"""The job ran out of memory: not retried (another worker has the same GPU), the client lowers its size."""
BALANCED_QUEUE_SIZE = 0
"""Jobs a worker behind HAProxy lets wait behind its running one (the sidecar starts workers with it):
none. HAProxy's queue is the cluster-wide FIFO; a job that still reaches a busy worker (HAProxy can
exceed ``maxconn``) is refused with a retryable 503, and HAProxy replays it on a free worker."""
CLIENT_GONE_STATUS = 499
"""Logged (nginx's convention) when the client left before its answer; nobody receives it."""
RECORD_JOB_HEADER = "X-Portrait-Record-Job"
"""Set by the balancer on a public REST generation (``/generate``, ``/generate/stream``) that reaches a worker
directly: a worker with ``--jobs-url`` records it as a job (``webui.worker.job_record``). Dropped from what clients
and the worker queue send."""
WORKER_JOBS_PREFIX = "/v1/worker-jobs"
"""Where a worker records its REST generations at the jobs service (``jobs.api.worker_jobs``): through the
worker queue only, never the public site."""
EVENT_JOB_KEY_PREFIX = "gradio-event:"
"""How the ``Idempotency-Key`` of a Gradio API call's job begins (then the call's Gradio event id): a web front that
adopts the call when its own died finds the job by it (``webui.web.studio.adoption``)."""
ADOPTED_EVENT_HEADER = "X-Portrait-Adopted-Event"
"""Set by the stream relay on a join it sends again at another web front for a call whose web front died: the
call's first event id, which names its job there too (``webui.web.event_ids.event_job_key``). Dropped from what
clients send."""
ADOPT_PATH = "/relay/adopt"
"""Where the balancer's stream relay (``jobs.relay``) asks a web front to adopt a call whose web front died
(``?session_hash=…&event_id=…``): through the worker queue only, never the public site (HAProxy answers 404)."""
QUEUE_JOIN_PATH = "/gradio_api/queue/join"
"""Where a Gradio call starts: an API client's goes through the stream relay (``jobs.relay``)."""
QUEUE_CANCEL_PATH = "/gradio_api/cancel"
"""Where gradio_client cancels a call: through the stream relay too, which cancels a taken-over call's job."""
QUEUE_DATA_PATH = "/gradio_api/queue/data"
"""Gradio's event stream of a session's calls: an API client's goes through the stream relay (``jobs.relay``)."""
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A session hash, event id or upload id: what Gradio's page (base 36), gradio_client (UUIDs)
and Gradio's queue (hex UUIDs) make, with room to spare."""
CLIENT_ID_RULE = "1 to 64 letters, digits, '-' or '_'"

# --- limits: defaults shared by the worker, the web front and the studio page
MAX_IMAGES = 4
"""Most images one job may ask for."""
MAX_SIDE = 2048
"""Largest width or height in pixels."""
MAX_STEPS = 100
"""Most denoising steps."""
MAX_PROMPT_CHARS = 2000
"""Longest prompt or negative prompt."""
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""Largest retouch upload in bytes, checked at the web front and at the worker."""
PHOTO_FIELD = "init_image"
"""The generation field that carries a retouch's photo (base64); a job keeps it, shown as the URL of its bytes."""
MAX_UPLOAD_PIXELS = 4096 * 4096
"""Largest retouch upload in pixels (width x height, read from the file header)."""
MAX_MEGAPIXEL_STEPS = 512.0
"""Most work one job may ask for: megapixels x denoising steps x images (4 images of 1024x1024 at up to
122 steps; not 4 of 2048x2048 at 100 steps, which is 1678)."""

LISTEN_GRACE = 10.0
"""Seconds a web front lets a running job's client go without an open event stream before it cancels
the job (programs open the stream at once; a person running Gradio's two curl commands takes longer)."""

# --- files and processes
PRIVATE_UMASK = 0o077
"""Every ``main`` sets this umask first: files it (or a child) writes, logs and images, are this user's only."""

STANDBY_GO_SIGNAL = signal.SIGUSR1
"""The sidecar's go to a warm-standby worker (``--standby``): take over the GPU and the port, and serve."""

VRRP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
"""A balancer's VRRP states, as keepalived names them (its notify script writes them, the sidecar shows
them): MASTER holds the floating address."""

# --- fault injection, for tests only: production never sets these
FAULT_OOM_AT_STEP = "PORTRAIT_FAULT_OOM_AT_STEP"
"""Raise the device's out-of-memory error at this denoising step (1-based)."""
FAULT_DIE_AT_STEP = "PORTRAIT_FAULT_DIE_AT_STEP"
"""SIGKILL the worker's own process at this denoising step (1-based)."""
FAULT_STALL_AT_STEP = "PORTRAIT_FAULT_STALL_AT_STEP"
"""Block the generation thread after this denoising step (1-based), in a sleep that releases the GIL:
a stuck driver call while the worker's event loop still answers."""
FAULT_STEP_CPU_SECONDS = "PORTRAIT_FAULT_STEP_CPU_SECONDS"
"""Make every denoising step use at least this much CPU time of the generation thread (it computes until then):
a slow model whose jobs last at least steps x this, on any CPU, and longer when the CPU is starved."""
FAULT_RECORD_DELAY_S = "PORTRAIT_FAULT_RECORD_DELAY_S"
"""A web front: an API call waits this many seconds before its job is recorded, on its first join only (not when the
stream relay joins it again at another front): the window in which its front dies with nothing recorded."""
FAULT_PROMPT_MARKER = "PORTRAIT_FAULT_PROMPT_MARKER"
"""When set, faults fire only for prompts that contain this text."""
