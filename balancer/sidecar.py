"""The sidecar: keeps every managed node process on this host running and in step with HAProxy.

    python -m balancer.sidecar --cluster cluster.yaml     # usually started by launch.py

For each managed node part (web front, worker) one ``ProcessSupervisor``:

1. puts the server in ``maint`` in HAProxy, starts the process (in its own process group,
   output appended to ``RUN_DIR/logs/NODE-PART.log``; a web front gets its own Gradio temp
   dir, ``RUN_DIR/gradio/NODE``) and probes it (workers: ``/readyz``,
   model loaded and warm; web fronts: ``/healthz``, HAProxy's own checks decide readiness);
2. once it answers, sets the server ``ready`` (HAProxy's health checks then bring it UP);
3. when the process dies: ``maint`` first, so no request is routed to it; then the cause
   (``balancer.causes``) is logged and counted, and the process restarted: at once the
   first time, then with exponential backoff (``balancer.restart_policy``);
4. a crash loop (too many deaths in a window) stops the restarts: the server stays in
   ``maint`` and the sidecar says so (ERROR log, ``portrait_sidecar_crash_looped`` metric,
   ``crash_looped`` in ``/status``) until an operator fixes the cause and asks for another
   try with ``POST /retry/NODE/PART`` (HTTP basic auth: the stats page's user and password);
5. a process that is alive but fails its probe for longer than ``stuck_after`` (or never
   becomes ready within ``start_timeout``) is killed and restarted (cause ``stuck``).

SIGINT/SIGTERM: every server is set to ``drain``, every process gets SIGTERM, then SIGKILL
after ``stop_grace`` (the whole process group, so nothing is orphaned), then ``maint``.
``/status`` and ``/metrics`` are served on the sidecar's port (``balancer.status``).

``main`` (like ``launch.py``) sets a 077 umask and checks the run directory first
(``balancer.run_dir``), so every file the sidecar and its children write is private.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import uvicorn

from balancer.basic_auth import BasicAuth
from balancer.causes import Death, DeathClassifier, KernelLog, OomKillCounter
from balancer.cluster import (
    ClusterConfigError,
    ClusterSpec,
    NodeSpec,
    PartSpec,
    SidecarSpec,
    load_cluster_file,
    parse_cluster,
)
from balancer.runtime_api import RuntimeAPI, RuntimeAPIError, ServerState
from balancer.haproxy_config import WEBS_BACKEND, WORKERS_BACKEND
from balancer.lifetime import terminate_with_parent
from balancer.restart_policy import RestartPolicy
from balancer.run_dir import open_private_log, prepare_run_dir, private_dir
from balancer.status import PartState, PartStatus, SidecarMetrics, status_app
from webui.settings import PRIVATE_UMASK

logger = logging.getLogger("balancer.sidecar")

BACKENDS = {"web": WEBS_BACKEND, "worker": WORKERS_BACKEND}
"""Node part -> the HAProxy backend its server is in."""
PROBE_PATHS = {"web": "/healthz", "worker": "/readyz"}
"""What the sidecar probes: a worker is ready when its model is warm; a web front when it serves."""


class HAProxyGate:
    """Tells HAProxy whether a server may take traffic; logs (never raises) when it cannot.

    It remembers the last state asked for each server, so that a restarted HAProxy (whose
    servers all start out ``ready``) can be told again with ``reapply``.
    """

    def __init__(self, api: RuntimeAPI | None) -> None:
        self.api = api
        self.wanted: dict[tuple[str, str], ServerState] = {}

    def set_state(self, backend: str, server: str, state: ServerState) -> bool:
        """``ready``, ``drain`` or ``maint``; False when HAProxy could not be told."""
        self.wanted[(backend, server)] = state
        if self.api is None:
            return False
        try:
            self.api.set_server_state(backend, server, state)
        except (OSError, RuntimeAPIError) as exc:
            logger.warning("could not set %s/%s to %s in HAProxy: %s", backend, server, state, exc)
            return False
        logger.info("HAProxy: %s/%s -> %s", backend, server, state)
        return True

    def reapply(self) -> None:
        """Tell HAProxy every state asked so far again (after it restarted)."""
        for (backend, server), state in list(self.wanted.items()):
            self.set_state(backend, server, state)


def part_command(spec: ClusterSpec, node: NodeSpec, kind: str, part: PartSpec) -> list[str]:
    """The command line of a managed node part (its own ``command`` if it has one)."""
    if part.command:
        return list(part.command)
    common = ["--host", part.host, "--port", str(part.port)]
    if kind == "worker":
        return [sys.executable, "-m", "webui.worker", *common, "--worker-id", node.name, *part.args]
    limits = spec.limits
    return [
        sys.executable, "-m", "webui.web", *common, "--node-id", node.name,
        "--worker-url", spec.workers_frontend.url, "--max-body-bytes", str(limits.max_body_bytes),
        "--body-timeout", str(limits.body_timeout), *part.args,
    ]


def retry_command(spec: ClusterSpec, node: str, part: str) -> str:
    """The operator's command that retries a crash-looped part (the password left for them to fill in)."""
    return f"curl -u {spec.stats.user}:STATS_PASSWORD -X POST {spec.sidecar.url}/retry/{node}/{part}"


def process_family(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def send_signal(procs: list[psutil.Process], sig: int) -> None:
    """Signal each process that is still there."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group we created (its leader's PID is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ProcessSupervisor:
    """Keeps one node process running, restarts it when it dies, and keeps HAProxy told."""

    def __init__(
        self,
        status: PartStatus,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        settings: SidecarSpec,
        gate: HAProxyGate,
        classifier: DeathClassifier,
        metrics: SidecarMetrics,
        probe_url: str,
        private_dirs: tuple[Path, ...] = (),
        retry_hint: str = "",
    ) -> None:
        self.status = status
        self.command = command
        self.env = env
        self.log_path = log_path
        self.settings = settings
        self.gate = gate
        self.classifier = classifier
        self.metrics = metrics
        self.probe_url = probe_url
        self.private_dirs = private_dirs
        """Directories made (0700, ours) before each start, parents first."""
        self.retry_hint = retry_hint
        self.policy = RestartPolicy(
            settings.backoff_initial, settings.backoff_max, settings.crash_loop_deaths, settings.crash_loop_window
        )
        self.proc: asyncio.subprocess.Process | None = None
        self._oom_baseline: int | None = None
        self._retry = asyncio.Event()
        self.name = f"{status.node}/{status.part}"
        metrics.register(status)

    def _set_state(self, state: PartState) -> None:
        self.status.state = state
        self.metrics.set_state(self.status)

    def _haproxy(self, state: ServerState) -> None:
        self.gate.set_state(self.status.backend, self.status.node, state)

    async def run(self, stopping: asyncio.Event) -> None:
        """Start, watch and restart the process until ``stopping`` is set; then stop it."""
        try:
            async with httpx.AsyncClient(timeout=self.settings.probe_timeout) as http:
                await self._supervise(http, stopping)
        finally:
            await self._stop()

    async def _supervise(self, http: httpx.AsyncClient, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self._start()
            death = await self._watch(http, stopping)
            if death is None:
                return
            self._record(death)
            if self.policy.crash_looping():
                self._give_up()
                if not await self._wait_for_retry(stopping):
                    return
                continue
            delay = self.policy.next_delay()
            if delay:
                self._set_state(PartState.BACKOFF)
                logger.info("%s: restarting in %.1f s", self.name, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
            if not stopping.is_set():
                self.status.restarts += 1
                self.metrics.record_restart(self.status)

    async def _start(self) -> None:
        if self.status.state is PartState.STOPPED:
            self._haproxy("maint")  # out of rotation until it answers (after a death it already is)
        for directory in self.private_dirs:
            private_dir(directory)
        self._oom_baseline = self.classifier.baseline()
        with open_private_log(self.log_path) as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )
        self.status.pid = self.proc.pid
        self.status.started_at = time.monotonic()
        self.status.ready_at = None
        self._set_state(PartState.STARTING)
        logger.info("%s: started pid %d (log %s)", self.name, self.proc.pid, self.log_path)

    async def _watch(self, http: httpx.AsyncClient, stopping: asyncio.Event) -> Death | None:
        """Probe until the process dies (its ``Death``), gets stuck (killed: ``Death``) or we stop (None)."""
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        stop = asyncio.ensure_future(stopping.wait())
        last_ok = time.monotonic()
        try:
            while True:
                probe = asyncio.ensure_future(self._probe(http))
                await asyncio.wait({exited, stop, probe}, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    probe.cancel()
                    self._haproxy("maint")  # first of all: no more requests to it
                    return None if stop.done() else await self._classify_exit()
                if stop.done():
                    probe.cancel()
                    return None
                now = time.monotonic()
                if probe.result():
                    last_ok = now
                    self._on_probe_ok()
                elif self._probe_failed_too_long(now, last_ok):
                    return await self._kill_stuck(now - last_ok)
                await asyncio.wait({exited, stop}, timeout=self.settings.probe_interval)
        finally:
            stop.cancel()

    async def _probe(self, http: httpx.AsyncClient) -> bool:
        try:
            return (await http.get(self.probe_url)).status_code == 200
        except httpx.HTTPError:
            return False

    def _on_probe_ok(self) -> None:
        if self.status.state is PartState.READY:
            return
        if self.status.state is PartState.STARTING:
            startup = time.monotonic() - (self.status.started_at or 0)
            logger.info("%s: ready after %.1f s", self.name, startup)
        else:
            logger.info("%s: answering its probe again", self.name)
        self.status.ready_at = time.monotonic()
        self._set_state(PartState.READY)
        self._haproxy("ready")

    def _probe_failed_too_long(self, now: float, last_ok: float) -> bool:
        if self.status.state is PartState.STARTING:
            return now - (self.status.started_at or now) > self.settings.start_timeout
        if self.status.state is PartState.READY:
            self._set_state(PartState.UNREADY)
            logger.warning("%s: probe %s failing", self.name, self.probe_url)
        return now - last_ok > self.settings.stuck_after

    async def _kill_stuck(self, silent_for: float) -> Death:
        assert self.proc is not None
        self._haproxy("maint")
        logger.error("%s: no answer from %s for %.0f s: killing pid %d", self.name, self.probe_url, silent_for, self.proc.pid)
        returncode = await self._terminate(grace=0.0)  # stuck: no graceful stop to wait for
        return await self.classifier.classify(returncode, self.proc.pid, None, stuck=True)

    async def _terminate(self, grace: float) -> int:
        """SIGTERM the process and its descendants, SIGKILL after ``grace``; then its whole group."""
        assert self.proc is not None
        family = process_family(self.proc.pid) if self.proc.returncode is None else []
        send_signal(family, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=grace or None)
        except asyncio.TimeoutError:
            logger.warning("%s: still running %.0f s after SIGTERM: SIGKILL", self.name, grace)
            send_signal(family, signal.SIGKILL)
        returncode = await self.proc.wait()
        send_signal(family[1:], signal.SIGKILL)  # descendants that ignored SIGTERM
        kill_group(self.proc.pid)
        return returncode

    async def _classify_exit(self) -> Death:
        assert self.proc is not None
        kill_group(self.proc.pid)  # leftovers of the dead process's group: no orphans
        return await self.classifier.classify(self.proc.returncode, self.proc.pid, self._oom_baseline)

    def _record(self, death: Death) -> None:
        self.policy.record_death()
        status = self.status
        status.last_cause, status.last_detail, status.last_returncode = death.cause, death.detail, death.returncode
        status.deaths[death.cause] += 1
        status.pid = None
        self.metrics.record_death(status, death)
        logger.warning("%s: died (%s): %s", self.name, death.cause.value, death.detail)

    def _give_up(self) -> None:
        self.status.crash_looped = True
        self._set_state(PartState.CRASH_LOOP)
        self._haproxy("maint")
        logger.error(
            "%s: CRASH LOOP: %d deaths within %.0f s (last: %s). Not restarting it; it stays in maint. "
            "Fix the cause (see %s), then retry it: %s (or restart the cluster).",
            self.name, self.policy.recent_deaths(), self.settings.crash_loop_window,
            self.status.last_detail, self.log_path, self.retry_hint or "POST /retry on the sidecar",
        )

    def retry(self) -> bool:
        """Try a crash-looped process again (``POST /retry/NODE/PART``); False if it is not crash-looped."""
        if not self.status.crash_looped:
            return False
        self._retry.set()
        return True

    async def _wait_for_retry(self, stopping: asyncio.Event) -> bool:
        """Wait in the crash loop until an operator asks for a retry (True) or the sidecar stops."""
        retry = asyncio.create_task(self._retry.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({retry, stop}, return_when=asyncio.FIRST_COMPLETED)
        retry.cancel()
        stop.cancel()
        if stopping.is_set():
            return False
        self._retry.clear()
        self.policy.forget_deaths()
        self.status.crash_looped = False
        self.metrics.record_restart(self.status)
        self.status.restarts += 1
        logger.warning("%s: retrying after a crash loop, as asked", self.name)
        return True

    async def _stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self._set_state(PartState.STOPPING)
            self._haproxy("drain")
            await self._terminate(self.settings.stop_grace)
            logger.info("%s: stopped (exit %s)", self.name, self.proc.returncode)
        self._haproxy("maint")
        self.status.pid = None
        if self.status.state is not PartState.CRASH_LOOP:
            self._set_state(PartState.STOPPED)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn serving inside the sidecar's event loop; the sidecar owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Sidecar:
    """Supervises every managed node part of a cluster and serves its status."""

    def __init__(self, spec: ClusterSpec, api: RuntimeAPI | None, base_env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.settings = spec.sidecar
        self.gate = HAProxyGate(api)
        self.metrics = SidecarMetrics()
        self.classifier = DeathClassifier(OomKillCounter.for_this_process(self.settings.oom_counter_file), KernelLog())
        self.stopping = asyncio.Event()
        env = dict(os.environ if base_env is None else base_env)
        self.supervisors = [
            self._supervisor(node, kind, part, env)
            for node in spec.nodes
            if node.managed
            for kind, part in (("worker", node.worker), ("web", node.web))
            if part is not None
        ]

    def _supervisor(self, node: NodeSpec, kind: str, part: PartSpec, env: dict[str, str]) -> ProcessSupervisor:
        status = PartStatus(node=node.name, part=kind, backend=BACKENDS[kind], url=part.url)
        logs = self.spec.run_dir / "logs"
        own_env = {"PYTHONUNBUFFERED": "1"}
        private_dirs = [logs]
        if kind == "web" and "GRADIO_TEMP_DIR" not in part.env:
            # Gradio's uploads and generated images: private to this node, not the shared /tmp/gradio.
            gradio = self.spec.run_dir / "gradio"
            own_env["GRADIO_TEMP_DIR"] = str(gradio / node.name)
            private_dirs += [gradio, gradio / node.name]
        return ProcessSupervisor(
            status=status,
            command=part_command(self.spec, node, kind, part),
            env={**env, **own_env, **part.env},
            log_path=logs / f"{node.name}-{kind}.log",
            settings=self.settings,
            gate=self.gate,
            classifier=self.classifier,
            metrics=self.metrics,
            probe_url=part.url + PROBE_PATHS[kind],
            private_dirs=tuple(private_dirs),
            retry_hint=retry_command(self.spec, node.name, kind),
        )

    def statuses(self) -> list[PartStatus]:
        """The status record of every supervised process."""
        return [supervisor.status for supervisor in self.supervisors]

    def retry(self, node: str, part: str) -> bool | None:
        """Retry a crash-looped node part: None if there is no such part, else whether it was crash-looped."""
        for supervisor in self.supervisors:
            if (supervisor.status.node, supervisor.status.part) == (node, part):
                return supervisor.retry()
        return None

    def request_stop(self, signum: int | None = None) -> None:
        """Begin a graceful shutdown (signal handler)."""
        if not self.stopping.is_set():
            name = signal.Signals(signum).name if signum else "request"
            logger.info("shutting down (%s): draining and stopping %d processes", name, len(self.supervisors))
        self.stopping.set()

    async def run(self) -> None:
        """Supervise until SIGINT/SIGTERM (or ``request_stop``), then stop every process."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop, signum)
        retry_auth = BasicAuth(self.spec.stats.user, self.spec.stats.password)
        config = uvicorn.Config(
            status_app(self.statuses, self.metrics, self.retry, retry_auth),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        server_task = asyncio.create_task(server.serve())
        tasks = [asyncio.create_task(supervisor.run(self.stopping)) for supervisor in self.supervisors]
        try:
            await asyncio.gather(*tasks)
            await self.stopping.wait()
        except Exception:
            logger.exception("a supervisor failed; stopping everything")
            self.request_stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            server.should_exit = True
            await server_task
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        logger.info("all processes stopped")


def configure_logging() -> None:
    """Plain timestamped logs on stderr; no per-probe lines from httpx."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """``python -m balancer.sidecar --cluster FILE``: supervise the managed nodes of a cluster file."""
    parser = argparse.ArgumentParser(prog="python -m balancer.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", type=Path, required=True, help="Cluster YAML file (see assets/cluster.example.yaml).")
    parser.add_argument("--no-haproxy", action="store_true", help="Do not talk to HAProxy's runtime API.")
    args = parser.parse_args(argv)
    os.umask(PRIVATE_UMASK)
    configure_logging()
    try:
        spec = parse_cluster(load_cluster_file(args.cluster))
        prepare_run_dir(spec.run_dir)
    except ClusterConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    api = None if args.no_haproxy else RuntimeAPI(spec.socket_path)
    asyncio.run(Sidecar(spec, api).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
