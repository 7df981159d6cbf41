"""Settings of ``python launch.py``: flags (and ``PORTRAIT_LAUNCH_*`` variables) -> a ``ClusterSpec``.

Flags left unset keep the value from ``--cluster FILE`` or, without one, the defaults of
``balancer.config.cluster_fields``, its sections (``balancer.config.limits`` ...) and ``webui.settings``
(model, LoRA, ports); nothing is defaulted twice. ``python launch.py --help`` lists every flag.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, CliSuppress, SettingsConfigDict

from balancer.config.access import STATS_PASSWORD_ENV
from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.gpus import CPU_NODES, assign_gpus, list_gpus
from balancer.config.loading import load_cluster_file, local_nodes, parse_cluster
from webui.settings import WebSettings, WorkerSettings
from webui.share import SHARE_HOST_SUFFIX

logger = logging.getLogger(__name__)

SECRET_FLAGS = ("--stats-password",)
"""Flags refused on the command line: every user of the machine reads it in ps."""


def secret_flag_problem(argv: list[str]) -> str | None:
    """Why ``argv`` may not be used (it carries a secret), or None."""
    for arg in argv:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in SECRET_FLAGS:
            return (f"{flag} would show the password to every user of this machine (ps); set "
                    f"{STATS_PASSWORD_ENV} or give --stats-password-file FILE (mode 600) instead")
    return None


def _default(model: type, name: str) -> object:
    return model.model_fields[name].default


def _spec_default(section: str, name: str) -> object:
    """A listener default of ``ClusterSpec`` (e.g. the public port), for help texts."""
    return getattr(ClusterSpec.model_fields[section].default_factory(), name)


class LaunchSettings(BaseSettings):
    """Start HAProxy, the sidecar and the nodes. Flags not given keep the --cluster file's values."""

    model_config = SettingsConfigDict(
        cli_prog_name="python launch.py",
        env_prefix="PORTRAIT_LAUNCH_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_parse_none_str="unset",
        extra="ignore",
    )

    nodes: int | None = Field(None, ge=0, description="Local nodes (web front + worker) to start (unset: one per "
                              f"GPU slot of --gpus, or {CPU_NODES} without GPUs); when a --cluster file lists "
                              "nodes, none unless given.")
    gpus: str = Field("auto", description="GPUs of the local workers, one each: 'auto' (every GPU NVML sees; "
                      "CPU if none), 'none' (CPU), or a list of nvidia-smi indices such as '0,1' (used as given "
                      "when NVML sees no GPU: workers then fall back to CPU and say so in /readyz).")
    workers_per_gpu: int = Field(1, ge=1, description="Workers sharing each GPU (they share its memory: each "
                                 "loads its own model copy). More --nodes than GPUs x this is an error.")
    model: str = Field(_default(WorkerSettings, "model"), description="Model of the local workers: 'demo' "
                       "(offline tiny model), 'awportrait-z', 'sdxl', a hub id or a local diffusers directory.")
    lora: str = Field(_default(WorkerSettings, "lora"), description="LoRA of the local workers: 'auto' (the "
                      "preset's own), 'none', a hub id or a local path.")
    standby: bool = Field(False, description="Keep a warm standby per local worker: a second process with the "
                          "model in host memory, promoted in seconds when the worker dies (costs host RAM: "
                          "the weights' size plus about 0.5 GB each).")
    threads: int = Field(0, ge=0, description="torch CPU threads per local worker "
                         "(0: CPU cores / workers, at least 1).")
    host: str = Field(_spec_default("public", "host"), description="Public address; 0.0.0.0 exposes the "
                      "cluster on every interface.")
    port: int = Field(_spec_default("public", "port"), description="Public port: browser UI, gradio_client, REST.")
    worker_queue_port: int = Field(_spec_default("worker_queue", "port"), description="Private port the web "
                             "fronts send their jobs to (the workers' shared queue).")
    stats_port: int = Field(_spec_default("stats", "port"), description="HAProxy stats page and /metrics (loopback).")
    stats_password: CliSuppress[str | None] = Field(None, description="Only from PORTRAIT_LAUNCH_STATS_PASSWORD: "
                                                    "no flag (every user of the machine sees flags in ps).")
    stats_password_file: Path | None = Field(None, description="A file (mode 600) whose first line is the stats "
                                             "page password; or set PORTRAIT_STATS_PASSWORD (unset: the cluster "
                                             "file's, else random, printed at start).")
    sidecar_port: int = Field(_spec_default("sidecar", "port"), description="Sidecar /status and /metrics (loopback).")
    first_web_port: int = Field(_default(WebSettings, "port"), description="Port of the first local web front; "
                                "the next ones count up.")
    first_worker_port: int = Field(_default(WorkerSettings, "port"), description="Port of the first local worker; "
                                   "the next ones count up.")
    auth_users_file: Path | None = Field(None, description="Turn on HTTP basic auth for the whole site: a file "
                                         "of 'user:hash' lines (hash from 'openssl passwd -6').")
    cluster: Path | None = Field(None, description="Cluster YAML file: listeners, limits and nodes, including "
                                 "remote ones (see assets/cluster.example.yaml).")
    run_dir: Path | None = Field(None, description="Where haproxy.cfg, the runtime socket and logs go: "
                                 "a 0700 directory of this user's, created if missing "
                                 "(unset: a portrait-ha directory under the system's temp dir).")
    role: Literal["all", "balancer", "node"] = Field(
        "all", description="What this host runs: 'all' (HAProxy, its sidecar and the local nodes), 'balancer' "
        "(HAProxy and its sidecar, no node), or 'node' (a node host of the --cluster file: its nodes under a "
        "sidecar that answers every balancer's agent checks, no HAProxy).")
    node_host: str | None = Field(None, description="With --role node: which node host of the cluster file this "
                                  "is (unset: the one whose address is this machine's).")
    balancer: str | None = Field(None, description="With a floating address in the --cluster file: which of its "
                                 "balancers this is (unset: the one whose address is this machine's).")
    share: bool = Field(False, description="Open a public Gradio share link to the balancer (all nodes).")
    public_host: list[str] = Field(default_factory=list, description="A host name the public site answers to "
                                   "(repeat the flag for more; a leading dot allows subdomains); any other Host "
                                   "header gets 421. This machine's own addresses are always allowed.")

    @field_validator("gpus")
    @classmethod
    def _check_gpus(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "none"):
            return value
        indices = [item.strip() for item in value.split(",")]
        if not all(item.isdigit() for item in indices):
            raise ValueError("expected 'auto', 'none' or GPU indices separated by commas, such as '0,1'")
        if len(set(map(int, indices))) != len(indices):
            raise ValueError("a GPU is listed twice (for several workers per GPU, use --workers-per-gpu)")
        return ",".join(str(int(item)) for item in indices)

    def local_gpus(self) -> tuple[list[int], bool]:
        """The GPUs local workers go on, and whether NVML confirmed that they exist.

        ``auto``: NVML's list. A given list is checked against NVML's when NVML sees GPUs, and
        taken as given when it sees none (a CPU machine: the workers fall back to CPU).
        """
        if self.gpus == "none":
            return [], False
        seen = [gpu.index for gpu in list_gpus()]
        if self.gpus == "auto":
            if seen and os.environ.get("CUDA_VISIBLE_DEVICES"):
                logger.warning("--gpus auto uses every GPU NVML sees (%s) and ignores CUDA_VISIBLE_DEVICES=%s: "
                               "pass --gpus LIST to choose", ",".join(map(str, seen)),
                               os.environ["CUDA_VISIBLE_DEVICES"])
            return seen, bool(seen)
        asked = [int(item) for item in self.gpus.split(",")]
        if not seen:
            logger.warning("NVML sees no GPU: workers get --gpus %s as asked and fall back to CPU where CUDA "
                           "cannot see theirs", self.gpus)
            return asked, False
        missing = [gpu for gpu in asked if gpu not in seen]
        if missing:
            raise ClusterConfigError(f"--gpus: no GPU {','.join(map(str, missing))} on this machine "
                                     f"(NVML sees {','.join(map(str, seen))})")
        return asked, True

    def local_thread_count(self, workers: int) -> int:
        """torch threads per local worker: ``--threads`` or an even share of the CPU cores."""
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, workers))

    def _given(self, name: str) -> bool:
        """Whether a flag (or its environment variable) was given, as opposed to defaulted."""
        return name in self.model_fields_set

    def cluster_data(self) -> dict:
        """The cluster file (if any) with the given flags applied on top, not yet validated."""
        data = load_cluster_file(self.cluster) if self.cluster else {}
        overrides = {
            "host": ("public", "host"),
            "port": ("public", "port"),
            "worker_queue_port": ("worker_queue", "port"),
            "stats_port": ("stats", "port"),
            "stats_password": ("stats", "password"),
            "sidecar_port": ("sidecar", "port"),
        }
        for flag, (section, key) in overrides.items():
            if self._given(flag) and getattr(self, flag) is not None:
                data.setdefault(section, {})[key] = getattr(self, flag)
        password = self.stats_password_from_outside()
        if password is not None:
            data.setdefault("stats", {})["password"] = password
        if self.auth_users_file is not None:
            data["users_file"] = str(self.auth_users_file)
        hosts = list(data.get("public_hosts") or []) + self.public_host
        if self.share:
            hosts.append(SHARE_HOST_SUFFIX)
            data["shared"] = True
        if hosts:
            data["public_hosts"] = hosts
        if self.run_dir is not None:
            data["run_dir"] = str(self.run_dir)
        existing = data.get("nodes") or []
        if self.nodes is not None or not existing:
            data["nodes"] = existing + self._local_nodes("local" if existing else "node")
        return data

    def stats_password_from_outside(self) -> str | None:
        """The stats password from ``--stats-password-file`` or ``PORTRAIT_STATS_PASSWORD`` (in that order)."""
        if self.stats_password_file is not None:
            try:
                lines = self.stats_password_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ClusterConfigError(f"--stats-password-file {self.stats_password_file}: {exc.strerror}") from None
            if not lines or not lines[0].strip():
                raise ClusterConfigError(f"--stats-password-file {self.stats_password_file}: the first line is empty")
            return lines[0].strip()
        return os.environ.get(STATS_PASSWORD_ENV) or None

    def _local_nodes(self, name_prefix: str) -> list[dict]:
        """The local nodes' descriptions: how many, and the GPU of each (``assign_gpus``).

        Workers on GPUs that NVML confirmed get ``--device cuda`` (CUDA not seeing theirs is then a
        load failure, exit 87, not a silent CPU run); ``--gpus none`` gives ``--device cpu``.
        """
        gpus, confirmed = self.local_gpus()
        placement = assign_gpus(gpus, self.nodes, self.workers_per_gpu)
        count = len(placement)
        worker_args = ["--model", self.model, "--lora", self.lora, "--threads", str(self.local_thread_count(count))]
        if confirmed:
            worker_args += ["--device", "cuda"]
        elif self.gpus == "none":
            worker_args += ["--device", "cpu"]
        if count:
            where = ", ".join(f"{name_prefix}{index + 1}: " + ("CPU" if gpu is None else f"GPU {gpu}")
                              for index, gpu in enumerate(placement))
            logger.info("%d local node(s): %s", count, where)
        return local_nodes(
            count,
            first_web_port=self.first_web_port,
            first_worker_port=self.first_worker_port,
            worker_args=worker_args,
            name_prefix=name_prefix,
            gpus=placement,
            standby=self.standby,
        )

    def cluster_spec(self) -> ClusterSpec:
        """The validated cluster description (``ClusterConfigError`` naming the field if not)."""
        return parse_cluster(self.cluster_data())
