"""Where and how the pipeline runs: device, dtype, attention, compile, FP8, VAE tiling, CPU offload.

``probe_machine()`` asks torch what this machine has; ``plan_device()`` is a pure function
that turns the worker's settings and that answer into a ``DevicePlan``; ``apply_plan()``
applies the plan to a loaded diffusers pipeline. Device and offload are decided here; dtype,
compile, FP8 and attention by ``configuration.choose_configuration``, each with its reason
(logged, and shown in ``/info`` and ``/readyz``). GPU-only choices (half precision, xformers,
FP8, model CPU offload) are picked automatically when CUDA is present and stay off on CPU;
``torch.compile`` of the denoiser on CUDA (unless offloading), never on CPU.

A worker given a GPU (``CUDA_VISIBLE_DEVICES``, set by the sidecar) that CUDA cannot see runs
on CPU with ``device: auto``, and its plan says so (``gpu_requested``, ``fallback_reason``, shown
in ``/readyz``); with ``device: cuda`` (what ``launch.py`` asks when NVML saw the GPU) that is a
``DeviceError``, which the worker turns into one log line and exit code ``EXIT_LOAD_FAILED``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass

import torch

from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError
from webui.worker.pipelines.configuration import Configuration, DeviceError, DeviceFacts, Flags, choose_configuration

logger = logging.getLogger(__name__)

GIB = 1024**3
OFFLOAD_BELOW_BYTES = 12 * GIB
"""``cpu_offload=auto`` offloads on GPUs with less memory than this."""
TILE_ABOVE_PIXELS = 1024 * 1024
"""``vae_tiling=auto`` tiles the VAE for images with more pixels than this."""

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


__all__ = ["DeviceError", "DevicePlan", "Machine", "apply_plan", "device_plan", "plan_device", "probe_machine"]


@dataclass(frozen=True)
class Machine:
    """What the machine offers, as far as the pipeline cares."""

    cuda: bool
    gpu_name: str = ""
    gpu_memory_bytes: int = 0
    bf16: bool = False
    xformers: bool = False
    visible_devices: str | None = None
    """``CUDA_VISIBLE_DEVICES`` as this process got it (None: unset)."""
    torch_cuda: str | None = None
    """The CUDA version torch was built with (None: a CPU-only build)."""
    capability: tuple[int, int] | None = None
    """The GPU's CUDA compute capability (9, 0 for Hopper)."""
    torchao: bool = False
    torch_version: str = torch.__version__

    def facts(self, cuda: bool) -> DeviceFacts:
        """What the configuration chooser needs; ``cuda``: whether the plan runs on the GPU."""
        return DeviceFacts(cuda=cuda, gpu_name=self.gpu_name, capability=self.capability,
                           memory_bytes=self.gpu_memory_bytes, bf16=self.bf16, torch_version=self.torch_version,
                           torchao=self.torchao, xformers=self.xformers)

    @property
    def gpu_requested(self) -> str | None:
        """The GPU(s) this process was given, if any (``CUDA_VISIBLE_DEVICES`` naming a device)."""
        value = (self.visible_devices or "").strip()
        return value if value and not value.startswith("-") else None

    def why_no_cuda(self) -> str:
        """Why torch sees no CUDA device, in words, for a log line."""
        if self.torch_cuda is None:
            cause = f"torch {torch.__version__} is built without CUDA"
        else:
            cause = f"torch {torch.__version__} (CUDA {self.torch_cuda}) finds no device"
        if self.gpu_requested:
            return f"CUDA cannot see the GPU this worker was given (CUDA_VISIBLE_DEVICES={self.gpu_requested}; {cause})"
        return f"torch sees no CUDA device ({cause})"


def xformers_available() -> bool:
    """True when the ``xformers`` package can be imported (it is an optional GPU extra)."""
    return importlib.util.find_spec("xformers") is not None


def torchao_available() -> bool:
    """True when the ``torchao`` package (FP8 quantization, an optional GPU extra) can be imported."""
    return importlib.util.find_spec("torchao") is not None


def probe_machine() -> Machine:
    """Ask torch for the CUDA device (index 0: the first of ``CUDA_VISIBLE_DEVICES``), its memory and bf16."""
    found = {"visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch_cuda": torch.version.cuda,
             "xformers": xformers_available(), "torchao": torchao_available()}
    if not torch.cuda.is_available():
        return Machine(cuda=False, **found)
    props = torch.cuda.get_device_properties(0)
    return Machine(
        cuda=True,
        gpu_name=props.name,
        gpu_memory_bytes=props.total_memory,
        bf16=torch.cuda.is_bf16_supported(),
        capability=(props.major, props.minor),
        **found,
    )


@dataclass(frozen=True)
class DevicePlan:
    """How the pipeline runs on this machine (see ``plan_device``)."""

    device: str
    dtype: torch.dtype
    attention: str
    compile: bool
    vae_tiling: str
    cpu_offload: bool
    threads: int
    gpu_name: str = ""
    gpu_memory_gib: float = 0.0
    gpu_requested: str | None = None
    """The GPU this worker was given (``CUDA_VISIBLE_DEVICES``), whether or not it runs there."""
    fallback_reason: str | None = None
    """Why it runs on CPU although it was given a GPU (None when it was not, or it runs there)."""
    fp8: bool = False
    """torchao float8 weights and activations in the denoiser's linear layers."""
    configuration: Configuration | None = None
    """dtype, compile, FP8 and attention as chosen, each with its reason."""

    def tile_vae(self, width: int, height: int) -> bool:
        """Whether to decode an image of this size with a tiled VAE."""
        if self.vae_tiling == "auto":
            return width * height > TILE_ABOVE_PIXELS
        return self.vae_tiling == "on"

    def as_dict(self) -> dict:
        """The plan as plain JSON-able values (the worker shows it in ``/readyz``)."""
        data = asdict(self)
        data["dtype"] = str(self.dtype).removeprefix("torch.")
        return data


def plan_device(settings: WorkerSettings, machine: Machine) -> DevicePlan:
    """Decide device, dtype, attention, compile, VAE tiling and offload from settings + machine.

    Raises ``DeviceError`` for an explicit request the machine cannot honour.
    """
    if settings.device == "cuda" and not machine.cuda:
        raise DeviceError(f"device: 'cuda' was requested but {machine.why_no_cuda()}")
    cuda = machine.cuda and settings.device != "cpu"
    fallback_reason = None
    if machine.gpu_requested and not machine.cuda and settings.device == "auto":
        fallback_reason = f"{machine.why_no_cuda()}: running on CPU"
        logger.warning("device: %s", fallback_reason)

    if settings.cpu_offload == "auto":
        cpu_offload = cuda and machine.gpu_memory_bytes < OFFLOAD_BELOW_BYTES
    elif settings.cpu_offload == "on" and not cuda:
        raise DeviceError("cpu_offload: 'on' needs a CUDA device (the model is already on the CPU)")
    else:
        cpu_offload = settings.cpu_offload == "on"

    flags = Flags(dtype=settings.dtype, attention=settings.attention, compile=settings.compile, fp8=settings.fp8,
                  cpu_offload=cpu_offload)
    configuration = choose_configuration(machine.facts(cuda), flags)
    if settings.compile == "on" and not cuda:
        logger.warning("compile: %s", configuration.compile.reason)

    return DevicePlan(
        device="cuda" if cuda else "cpu",
        dtype=_DTYPES[str(configuration.dtype.value)],
        attention=str(configuration.attention.value),
        compile=bool(configuration.compile.value),
        vae_tiling=settings.vae_tiling,
        cpu_offload=cpu_offload,
        threads=settings.threads or torch.get_num_threads(),
        gpu_name=machine.gpu_name if cuda else "",
        gpu_memory_gib=round(machine.gpu_memory_bytes / GIB, 1) if cuda else 0.0,
        gpu_requested=machine.gpu_requested,
        fallback_reason=fallback_reason,
        fp8=bool(configuration.fp8.value),
        configuration=configuration,
    )


def pin_host_memory(pipe, plan: DevicePlan) -> int:
    """Page-lock the host-memory weights of ``pipe`` that ``plan`` will move to a GPU; the bytes pinned.

    A warm standby holds its weights in host memory until the go; from page-locked memory the
    copy to the GPU runs as one DMA per tensor instead of through a staging buffer (``bench.gpu``
    measures both). Nothing to do (0) when the plan keeps the weights on the CPU or offloads
    them, or when a tensor is already off the host.
    """
    if not plan.device.startswith("cuda") or plan.cpu_offload:
        return 0
    pinned = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in (*component.parameters(), *component.buffers()):
            if tensor.device.type == "cpu" and not tensor.is_pinned():
                try:
                    tensor.data = tensor.data.pin_memory()
                except RuntimeError as exc:  # page-locked memory is limited (ulimit -l, the host's RAM)
                    logger.warning("pinned %.2f GiB, then could not pin more (%s); the rest is copied from "
                                   "ordinary memory", pinned / GIB, str(exc).splitlines()[0][:200])
                    return pinned
                pinned += tensor.numel() * tensor.element_size()
    logger.info("pinned %.2f GiB of weights in host memory", pinned / GIB)
    return pinned


def apply_plan(pipe, plan: DevicePlan) -> None:
    """Move ``pipe`` to the planned device and switch on the planned speed-ups.

    The dtype is applied at load time (``from_pretrained(dtype=...)``); VAE tiling is
    decided per request (``DevicePlan.tile_vae``).
    """
    torch.set_num_threads(plan.threads)
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    if plan.attention == "xformers":
        if hasattr(pipe, "unet"):
            pipe.enable_xformers_memory_efficient_attention()
        else:
            denoiser.set_attention_backend("xformers")
    if plan.cpu_offload:
        pipe.enable_model_cpu_offload(device=plan.device)
    else:
        pipe.to(plan.device)
    if plan.fp8:
        quantize_fp8(denoiser)
    if plan.compile:
        denoiser.compile()
    for name, choice in (plan.configuration.as_dict() if plan.configuration else {}).items():
        logger.info("configuration: %s %s (%s)", name, choice["value"], choice["reason"])
    logger.info("device plan: %s", {key: value for key, value in plan.as_dict().items() if key != "configuration"})


def quantize_fp8(denoiser: torch.nn.Module) -> None:
    """torchao float8 weights and dynamic float8 activations (per row) for the denoiser's linear layers."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(denoiser, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def device_plan(settings: WorkerSettings) -> DevicePlan:
    """This machine's plan for ``settings``; ``ModelLoadError`` (one line) when they ask for what it lacks."""
    try:
        return plan_device(settings, probe_machine())
    except DeviceError as exc:
        raise ModelLoadError(str(exc)) from None
