"""How the denoiser runs on this device: dtype, ``torch.compile``, FP8, attention, each with its reason.

``choose_configuration`` is a pure function of the device's facts (``DeviceFacts``: CUDA capability,
memory, torch version, whether ``torchao`` and ``xformers`` import) and the operator's flags
(``Flags``, from ``WorkerSettings``). Every choice carries one line saying why (``Choice.reason``);
the worker logs them and shows them in ``/info`` and ``/readyz``. An explicit flag the device
cannot honour is a ``DeviceError``, never a silent downgrade.

``Configuration.fallbacks`` lists the slower configurations to try when the quality gate
(``webui.worker.pipelines.quality``) refuses a faster one: FP8 goes first, then compile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

FP8_CAPABILITY = (8, 9)
"""FP8 tensor cores: Ada (8.9) and Hopper (9.0) onwards."""
FP8_TORCH = (2, 5)
"""The oldest torch whose float8 matrix multiply (``torch._scaled_mm``) torchao's FP8 uses."""
BF16_CAPABILITY = (8, 0)
"""bfloat16 tensor cores: Ampere (8.0) onwards."""

Mode = Literal["auto", "on", "off"]


class DeviceError(ValueError):
    """The settings ask for something this machine cannot do (e.g. ``--device cuda`` without CUDA)."""


@dataclass(frozen=True)
class DeviceFacts:
    """What the device offers, as far as the configuration cares (``device.probe_machine`` fills it)."""

    cuda: bool
    gpu_name: str = ""
    capability: tuple[int, int] | None = None
    memory_bytes: int = 0
    bf16: bool = False
    torch_version: str = ""
    torchao: bool = False
    xformers: bool = False

    def torch_at_least(self, version: tuple[int, int]) -> bool:
        """Whether ``torch_version`` (e.g. ``2.13.0+cu128``) is ``version`` or newer."""
        try:
            found = tuple(int(part) for part in self.torch_version.split("+")[0].split(".")[:2])
        except ValueError:
            return False
        return found >= version


@dataclass(frozen=True)
class Flags:
    """The operator's requests (``WorkerSettings``); ``auto`` leaves the choice to the device's facts."""

    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    attention: Literal["auto", "xformers", "sdpa"] = "auto"
    compile: Mode = "auto"
    fp8: Mode = "off"
    cpu_offload: bool = False
    """Whether the plan offloads the model to the CPU between calls (decided before this)."""


@dataclass(frozen=True)
class Choice:
    """One decision and why."""

    value: str | bool
    reason: str

    def as_dict(self) -> dict[str, str | bool]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class Configuration:
    """The chosen dtype, compile, FP8 and attention, fastest first in ``fallbacks``."""

    dtype: Choice
    compile: Choice
    fp8: Choice
    attention: Choice

    @property
    def label(self) -> str:
        """E.g. ``bfloat16+compile+fp8/sdpa``."""
        parts = [str(self.dtype.value)] + ["compile"] * bool(self.compile.value) + ["fp8"] * bool(self.fp8.value)
        return "+".join(parts) + f"/{self.attention.value}"

    def as_dict(self) -> dict[str, dict[str, str | bool]]:
        """Every choice with its reason, as JSON-able values (``/info``, ``/readyz``)."""
        return {field.name: getattr(self, field.name).as_dict() for field in dataclasses.fields(self)}

    def without(self, name: str, reason: str) -> Configuration:
        """This configuration with ``name`` (``fp8`` or ``compile``) switched off for ``reason``."""
        return dataclasses.replace(self, **{name: Choice(False, reason)})

    def fallbacks(self, reason: str) -> list[Configuration]:
        """The slower configurations the quality gate may fall back to, fastest first: no FP8, then no compile."""
        chain, current = [], self
        for name in ("fp8", "compile"):
            if getattr(current, name).value:
                current = current.without(name, reason)
                chain.append(current)
        return chain


def choose_configuration(facts: DeviceFacts, flags: Flags) -> Configuration:
    """The fastest configuration ``facts`` allow within ``flags``; ``DeviceError`` for an impossible request."""
    dtype = _dtype(facts, flags)
    compile_choice = _compile(facts, flags)
    return Configuration(dtype=dtype, compile=compile_choice, fp8=_fp8(facts, flags, dtype, compile_choice),
                         attention=_attention(facts, flags))


def _dtype(facts: DeviceFacts, flags: Flags) -> Choice:
    if flags.dtype != "auto":
        if flags.dtype == "bfloat16" and facts.cuda and not facts.bf16:
            raise DeviceError(f"dtype: bfloat16 is not supported by {facts.gpu_name or 'this GPU'}")
        return Choice(flags.dtype, "asked for (--dtype)")
    if not facts.cuda:
        return Choice("float32", "CPU: half precision is slow or unsupported there")
    if facts.bf16:
        return Choice("bfloat16", "the GPU has bfloat16 (fp16's precision, fp32's range: no overflow)")
    return Choice("float16", f"{facts.gpu_name or 'the GPU'} lacks bfloat16 (compute capability {_cc(facts)})")


def _compile(facts: DeviceFacts, flags: Flags) -> Choice:
    if not facts.cuda:
        why = "ignored: " if flags.compile == "on" else ""
        return Choice(False, f"{why}CPU: torch.compile of the denoiser is CUDA only")
    if flags.compile == "off":
        return Choice(False, "asked for (--compile off)")
    if flags.compile == "on":
        return Choice(True, "asked for (--compile on)")
    if flags.cpu_offload:
        return Choice(False, "CPU offload moves modules every call, which defeats compiled kernels")
    return Choice(True, "CUDA without offload: faster steps; the compile cache pays the compile once per host")


def _fp8(facts: DeviceFacts, flags: Flags, dtype: Choice, compile_choice: Choice) -> Choice:
    if flags.fp8 == "off":
        return Choice(False, "off (--fp8 off, the default until a GPU run shows its quality and speed)")
    missing = []
    if not facts.cuda:
        missing.append("a CUDA GPU")
    elif facts.capability is None or facts.capability < FP8_CAPABILITY:
        missing.append(f"compute capability >= 8.9 ({facts.gpu_name or 'the GPU'} has {_cc(facts)})")
    if not facts.torchao:
        missing.append("the torchao package")
    if not facts.torch_at_least(FP8_TORCH):
        missing.append(f"torch >= {FP8_TORCH[0]}.{FP8_TORCH[1]} (found {facts.torch_version or 'unknown'})")
    if dtype.value != "bfloat16":
        missing.append(f"bfloat16 weights (dtype is {dtype.value})")
    if not compile_choice.value:
        missing.append("torch.compile (FP8 without it is slower than bfloat16)")
    if flags.cpu_offload:
        missing.append("no CPU offload")
    if missing:
        if flags.fp8 == "on":
            raise DeviceError(f"fp8: 'on' needs {', '.join(missing)}; use 'auto' or 'off'")
        return Choice(False, f"needs {', '.join(missing)}")
    why = "asked for (--fp8 on)" if flags.fp8 == "on" else f"FP8 tensor cores (compute capability {_cc(facts)})"
    return Choice(True, f"{why}: torchao float8 weights and activations, per row")


def _attention(facts: DeviceFacts, flags: Flags) -> Choice:
    if flags.attention == "xformers":
        if not (facts.cuda and facts.xformers):
            raise DeviceError("attention: 'xformers' needs CUDA and the xformers package; use 'sdpa' or 'auto'")
        return Choice("xformers", "asked for (--attention xformers)")
    if flags.attention == "sdpa":
        return Choice("sdpa", "asked for (--attention sdpa)")
    if facts.cuda and facts.xformers:
        return Choice("xformers", "CUDA and the xformers package imports")
    if facts.cuda:
        return Choice("sdpa", "PyTorch's scaled-dot-product attention (xformers is not installed)")
    return Choice("sdpa", "CPU: PyTorch's scaled-dot-product attention")


def _cc(facts: DeviceFacts) -> str:
    return ".".join(map(str, facts.capability)) if facts.capability else "unknown"
