"""How failing node parts are found and handled: HAProxy's health checks (``health:``) and the sidecar's
supervision (``sidecar:``: probes, hang detection, restarts, log rotation)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from balancer.config.basics import Listener, StrictModel


class HealthSpec(StrictModel):
    """HAProxy's active health checks (``GET /readyz``) on every node part."""

    interval: float = Field(1.0, gt=0, description="Seconds between checks of a healthy server.")
    fast_interval: float = Field(0.25, gt=0, description="Seconds between checks while a server changes state.")
    down_interval: float = Field(1.0, gt=0, description="Seconds between checks of a down server.")
    timeout: float = Field(2.0, gt=0, description="Seconds a check may take.")
    fall: int = Field(2, ge=1, description="Failed checks before a server is marked DOWN.")
    rise: int = Field(2, ge=1, description="Passed checks before a server is marked UP.")
    slowstart: float = Field(10.0, ge=0, description="Seconds over which a returning server ramps up to full load.")
    dispatch_agent_interval: float = Field(
        0.01, gt=0, description="Seconds between polls of a worker's dispatch agent (its dispatch_agent_port): how "
        "soon the next job comes once a result is being encoded.",
    )
    host_agent_interval: float = Field(
        0.5, gt=0, description="Seconds between HAProxy's questions to a node host's host agent (its parts' states)."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        """A clear error for the old ``agent_interval``, which named both agents' intervals."""
        if isinstance(data, dict) and "agent_interval" in data:
            raise ValueError("agent_interval is now two settings: dispatch_agent_interval (a worker's dispatch "
                             "agent, default 0.01) and host_agent_interval (a node host's host agent, default 0.5)")
        return data


class SidecarSpec(Listener):
    """The supervisor of managed node processes, and its status endpoint."""

    port: int = Field(8405, ge=1, le=65535)
    probe_interval: float = Field(1.0, gt=0, description="Seconds between readiness probes of each process.")
    probe_timeout: float = Field(3.0, gt=0, description="Seconds one readiness probe may take.")
    haproxy_command_timeout: float = Field(
        5.0, gt=0, description="Seconds the sidecar waits for HAProxy's runtime API to answer one command (a "
        "server's state) before it logs the failure and goes on."
    )
    start_timeout: float = Field(
        600.0, gt=0, description="Seconds a (re)started process may take to become ready (model load)."
    )
    stuck_after: float = Field(
        60.0, gt=0, description="Seconds a ready process may fail its readiness probe before it is restarted."
    )
    hang_after: float = Field(
        2.0, gt=0, description="Seconds a started process may leave its probe unanswered while it is frozen "
        "(no CPU used, no thread runnable) before it is killed as hung; a slow or CPU-starved one is left to "
        "stuck_after (balancer/supervision/hang.py)."
    )
    hang_cpu_seconds: float = Field(
        0.05, ge=0, description="CPU seconds a process may use within hang_after and still count as frozen."
    )
    hang_check_interval: float = Field(
        0.25, gt=0, description="Seconds between looks at a process whose probe is late."
    )
    backoff_initial: float = Field(1.0, ge=0, description="Delay before the second restart; doubles each time.")
    backoff_max: float = Field(60.0, ge=0, description="Longest delay between restarts.")
    crash_loop_deaths: int = Field(5, ge=1, description="Deaths within crash_loop_window that mean a crash loop.")
    crash_loop_window: float = Field(300.0, gt=0, description="Seconds over which deaths are counted.")
    stop_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL on shutdown.")
    log_max_bytes: int = Field(
        20 * 1024 * 1024, ge=64 * 1024, description="Bytes a log in the run directory (a node part's, HAProxy's) "
        "may reach before it is rotated (balancer/supervision/log_rotation.py).",
    )
    log_keep: int = Field(3, ge=1, le=100, description="Rotated copies kept of each log (NAME.log.1 the newest).")
    log_check_interval: float = Field(5.0, gt=0, description="Seconds between looks at the logs' sizes.")
    history_interval: float = Field(
        10.0, ge=0.1, le=600, description="Seconds between two samples of the operations page's plots (GET "
        "/operations: the last hour, kept in memory).",
    )
    oom_counter_file: Path | None = Field(
        None,
        description="cgroup file with an oom_kill counter (memory.events or memory.oom_control); "
        "default: found from /proc/self/cgroup.",
    )
