"""The one documented source of defaults for a portrait-ha node.

Every setting can be given as a CLI flag (``--max-images 2``) or as an environment
variable with the ``PORTRAIT_`` prefix (``PORTRAIT_MAX_IMAGES=2``); flags win.
``python -m webui.worker --help`` and ``python -m webui.web --help`` list them all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from webui.contract import (
    CLUSTER_SECRET_ENV,
    EXIT_OOM,
    LISTEN_GRACE,
    MAX_IMAGES,
    MAX_MEGAPIXEL_STEPS,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
)
from webui.settings_common import (
    QueueClientSettings,
    ServerTLSSettings,
    default_cache_dir,
    default_compile_cache_dir,
)

_COMMON = dict(env_prefix="PORTRAIT_", cli_kebab_case=True, cli_implicit_flags=True, extra="ignore")


class WorkerSettings(ServerTLSSettings, QueueClientSettings):
    """Settings of a GPU worker (``python -m webui.worker``)."""

    model_config = SettingsConfigDict(cli_prog_name="python -m webui.worker", **_COMMON)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(7960, description="Port to listen on.")
    node: str = Field("", description="Name of the node this worker belongs to, reported in results (as worker_id), "
                      "logs and metrics (default: host:port).")
    model: str = Field(
        "demo",
        description="'demo' (offline tiny model), a preset ('awportrait-z', 'sdxl'), "
        "a Hugging Face hub id, or a local diffusers directory; 'standin:SECONDS' is not a model but the "
        "benchmarks' fixed-latency stand-in (sleeps SECONDS per job, or per step with 'standin:SECONDS/step', "
        "returns a gradient).",
    )
    lora: str = Field(
        "auto",
        description="LoRA weights: 'auto' (the preset's own), 'none', or a .safetensors file, a directory "
        "or a hub id holding one (diffusers, ComfyUI or kohya key layout).",
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="'auto' uses CUDA when present.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="'auto': bfloat16/float16 on CUDA, float32 on CPU."
    )
    attention: Literal["auto", "xformers", "sdpa"] = Field(
        "auto", description="'auto': xformers when importable on CUDA, else PyTorch SDPA."
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the denoiser; 'auto': on CUDA without CPU offload, never on CPU."
    )
    fp8: Literal["auto", "on", "off"] = Field(
        "off", description="torchao float8 weights and activations in the denoiser; 'auto': where the GPU has FP8 "
        "tensor cores (compute capability 8.9+), torchao imports, the weights are bfloat16 and compile is on. "
        "Off by default until a GPU run shows it keeps image quality (bench/gpu_session.py).",
    )
    vae_tiling: Literal["auto", "on", "off"] = Field("auto", description="'auto': tile the VAE above 1024x1024.")
    cpu_offload: Literal["auto", "on", "off"] = Field(
        "auto", description="'auto': model CPU offload on GPUs with less than 12 GiB."
    )
    threads: int = Field(0, description="torch CPU threads (0: torch's default).")
    queue_size: int = Field(8, ge=0, description="Jobs that may wait behind the running one before 503.")
    dispatch_agent_port: int = Field(
        0, ge=0, le=65535, description="Port of HAProxy's agent check (webui/worker/dispatch_agent.py): a second "
        "job while the last result is PNG-encoded, so the GPU does not wait. 0: off.",
    )
    dispatch_agent_host: str | None = Field(
        None, description="Address the dispatch agent listens on (default: --host). A node host's worker: "
        "127.0.0.1, where its sidecar's host agent asks it on HAProxy's behalf.",
    )
    max_images: int = Field(MAX_IMAGES, ge=1, description="Most images one request may ask for.")
    max_side: int = Field(MAX_SIDE, ge=64, description="Largest width or height in pixels.")
    max_upload_bytes: int = Field(MAX_UPLOAD_BYTES, ge=1, description="Largest retouch upload in bytes.")
    max_upload_pixels: int = Field(MAX_UPLOAD_PIXELS, ge=1, description="Largest retouch upload in pixels.")
    max_prompt_chars: int = Field(MAX_PROMPT_CHARS, description="Longest prompt or negative prompt.")
    max_megapixel_steps: float = Field(
        MAX_MEGAPIXEL_STEPS, gt=0, description="Most work one job may ask for, in megapixel-steps: width x height "
        "/ 1,000,000 x denoising steps x images (422 above; the per-field limits alone allow far more).",
    )
    max_consecutive_ooms: int = Field(3, ge=1, description=f"OOMs in a row before exiting with code {EXIT_OOM}.")
    warmup_steps: int = Field(2, ge=1, description="Denoising steps of the warm-up generation.")
    stall_floor: float = Field(
        10.0, gt=0, description="Fewest seconds without a denoising step (mid-job) that make a stall."
    )
    stall_factor: float = Field(
        10.0, gt=1, description="A stall is no denoising step for max(stall_floor, stall_factor x the usual "
        "step time): /readyz answers 503 'stalled' and the sidecar replaces the worker."
    )
    standby: Path | None = Field(
        None, description="Run as a warm standby (the sidecar sets this): import everything, load the model "
        "into host memory, write this file once loaded, then wait for SIGUSR1 before moving the model to the "
        "device, binding the port and serving. Unset: serve at once.",
    )
    graceful_shutdown: int = Field(
        30, ge=0, description="Seconds SIGTERM waits for requests in flight (a running job) before closing them."
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Cache for the demo model.")
    compile_cache_dir: Path = Field(
        default_factory=default_compile_cache_dir,
        description="torch.compile's on-disk cache (Inductor, Triton), shared by every worker of this host so "
        "a restart reuses the compiled denoiser.",
    )
    jobs_url: str | None = Field(
        None, description="The jobs service, through the balancer's worker queue: each public REST generation the "
        "balancer marks is recorded there as a job while it runs (its id in X-Job-Id; docs/jobs.md). Reached with "
        "--worker-queue-ca/--worker-queue-cert when https. Unset: none is recorded.",
    )

    @model_validator(mode="after")
    def _check_jobs_cert(self) -> WorkerSettings:
        if self.worker_queue_cert is not None and not (self.jobs_url or "").startswith("https://"):
            raise ValueError("--worker-queue-cert is presented over TLS only: give an https --jobs-url")
        return self

    def resolved_node(self) -> str:
        """The node's name: ``--node`` or ``hostname:port``."""
        return self.node or f"{socket.gethostname()}:{self.port}"


class WebSettings(ServerTLSSettings, QueueClientSettings):
    """Settings of a Gradio web front (``python -m webui.web``)."""

    model_config = SettingsConfigDict(cli_prog_name="python -m webui.web", **_COMMON)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(7860, description="Port to listen on.")
    node: str = Field("", description="Name of the node this web front belongs to (default: host:port).")
    worker_queue: str = Field(
        "http://127.0.0.1:7960",
        description="Where this front sends jobs: the balancer's worker queue, or one worker's URL.",
    )
    jobs_url: str | None = Field(
        None, description="The jobs service (/v1/jobs; docs/jobs.md): every generation of the page and the client "
        "API becomes a durable job there, which a reloaded page follows again. Unset: jobs go to --worker-queue "
        "directly. Reached with --worker-queue-ca/--worker-queue-cert when https.",
    )
    sign_in: bool = Field(
        False, description="Members of accounts sign in on a page of their own (docs/accounts.md) and the page's jobs "
        "become their account's; without a good session cookie the studio sends them there. Needs --jobs-url and "
        "the cluster secret (PORTRAIT_CLUSTER_SECRET, which signs the cookie for every web front).",
    )
    max_attempts: int = Field(3, ge=1, description="Attempts per job when a worker fails or is cut off.")
    retry_delay: float = Field(0.5, ge=0, description="Seconds between attempts.")
    request_timeout: float = Field(600.0, description="Seconds one generation may take.")
    share: bool = Field(False, description="Ask Gradio for a public share link.")
    max_images: int = Field(MAX_IMAGES, ge=1, description="Most images one request may ask for (UI slider cap).")
    concurrency: int = Field(
        8, ge=1, description="Jobs this front sends to the workers at once; more wait in the page's queue."
    )
    queue_max_size: int = Field(64, ge=1, description="Jobs that may wait in the page's queue before it refuses more.")
    root_path: str = Field(
        "", description="Public path (or full URL) of the page when a proxy serves it under a sub-path."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body, uploads included (413 above)."
    )
    listen_grace: float = Field(
        LISTEN_GRACE, gt=0,
        description="Seconds a running job's client may have no event stream open before its job is cancelled "
        "(a client that joined and never listens, or left).",
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a client may take to send a whole request body (408 after)."
    )
    max_upload_bytes: int = Field(
        MAX_UPLOAD_BYTES, ge=1, description="Largest retouch upload in bytes (checked before decoding)."
    )
    max_upload_pixels: int = Field(
        MAX_UPLOAD_PIXELS, ge=1, description="Largest retouch upload in pixels (checked before decoding)."
    )
    upload_max_files: int = Field(
        16, ge=1, le=1000, description="Most files (multipart parts) one upload request may hold (413 above; "
        "Gradio alone takes 1000).",
    )
    cache_max_bytes: int = Field(
        2 * 1024**3, ge=1024**2, description="Bytes on disk (allocated blocks: a tiny file takes a whole block) "
        "Gradio's upload/cache folder may hold; the oldest files go first.",
    )
    cache_max_inodes: int = Field(
        50_000, ge=100, description="Files and folders Gradio's upload/cache folder may hold (each upload is a "
        "folder and a file); the oldest files go first.",
    )
    cache_max_age: float = Field(3600.0, gt=0, description="Seconds a file may stay in Gradio's upload/cache folder.")
    cache_sweep_interval: float = Field(60.0, gt=0, description="Seconds between sweeps of Gradio's cache folder.")

    @model_validator(mode="after")
    def _check_queue_cert(self) -> WebSettings:
        if self.worker_queue_cert is not None and not self.worker_queue.startswith("https://"):
            raise ValueError("--worker-queue-cert is presented over TLS only: give an https --worker-queue")
        if self.sign_in and not self.jobs_url:
            raise ValueError("--sign-in checks passwords at the jobs service: give --jobs-url")
        if self.sign_in and not os.environ.get(CLUSTER_SECRET_ENV):
            raise ValueError(f"--sign-in signs its cookies with the cluster secret: set {CLUSTER_SECRET_ENV} (the "
                             "sidecar does)")
        return self

    def resolved_node(self) -> str:
        """The node's name: ``--node`` or ``hostname:port``."""
        return self.node or f"{socket.gethostname()}:{self.port}"
