"""The configuration chooser over a table of devices, and its fallbacks (pure: no torch, no GPU)."""

from __future__ import annotations

import pytest

from webui.worker.pipelines.configuration import Configuration, DeviceError, DeviceFacts, Flags, choose_configuration

GIB = 1024**3
TORCH = "2.13.0+cu128"
DEVICES = {
    "H100": DeviceFacts(True, "NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB, True, TORCH, torchao=True),
    "H200": DeviceFacts(True, "NVIDIA H200", (9, 0), 141 * GIB, True, TORCH, torchao=True, xformers=True),
    "A100": DeviceFacts(True, "NVIDIA A100-SXM4-80GB", (8, 0), 80 * GIB, True, TORCH, torchao=True),
    "T4": DeviceFacts(True, "Tesla T4", (7, 5), 15 * GIB, False, TORCH, torchao=True),
    "CPU": DeviceFacts(False, torch_version="2.13.0+cpu", torchao=True),
}


def values(configuration: Configuration) -> tuple:
    return tuple(getattr(configuration, name).value for name in ("dtype", "compile", "fp8", "attention"))


@pytest.mark.parametrize("device, flags, expected", [
    ("H100", Flags(), ("bfloat16", True, False, "sdpa")),
    ("H100", Flags(fp8="auto"), ("bfloat16", True, True, "sdpa")),
    ("H200", Flags(fp8="auto"), ("bfloat16", True, True, "xformers")),
    ("A100", Flags(fp8="auto"), ("bfloat16", True, False, "sdpa")),
    ("T4", Flags(fp8="auto", cpu_offload=True), ("float16", False, False, "sdpa")),
    ("T4", Flags(compile="on"), ("float16", True, False, "sdpa")),
    ("CPU", Flags(fp8="auto", compile="on"), ("float32", False, False, "sdpa")),
    ("H100", Flags(fp8="auto", compile="off"), ("bfloat16", False, False, "sdpa")),
    ("H100", Flags(fp8="auto", dtype="float16"), ("float16", True, False, "sdpa")),
])
def test_each_device_gets_its_fastest_safe_configuration(device: str, flags: Flags, expected: tuple) -> None:
    configuration = choose_configuration(DEVICES[device], flags)
    assert values(configuration) == expected
    for name, choice in configuration.as_dict().items():
        assert choice["reason"] and "\n" not in choice["reason"], name


def test_the_reasons_name_what_is_missing() -> None:
    a100 = choose_configuration(DEVICES["A100"], Flags(fp8="auto"))
    assert "compute capability >= 8.9" in a100.fp8.reason and "8.0" in a100.fp8.reason
    no_torchao = DeviceFacts(True, "NVIDIA H100", (9, 0), 80 * GIB, True, TORCH, torchao=False)
    assert "torchao" in choose_configuration(no_torchao, Flags(fp8="auto")).fp8.reason
    old_torch = DeviceFacts(True, "NVIDIA H100", (9, 0), 80 * GIB, True, "2.4.1+cu121", torchao=True)
    assert "torch >= 2.5 (found 2.4.1+cu121)" in choose_configuration(old_torch, Flags(fp8="auto")).fp8.reason
    assert "lacks bfloat16" in choose_configuration(DEVICES["T4"], Flags()).dtype.reason
    assert "offload" in choose_configuration(DEVICES["T4"], Flags(cpu_offload=True)).compile.reason
    assert "default" in choose_configuration(DEVICES["H100"], Flags()).fp8.reason


@pytest.mark.parametrize("device, flags, words", [
    ("A100", Flags(fp8="on"), "compute capability"),
    ("H100", Flags(fp8="on", compile="off"), "torch.compile"),
    ("CPU", Flags(fp8="on"), "a CUDA GPU"),
    ("T4", Flags(dtype="bfloat16"), "bfloat16 is not supported by Tesla T4"),
    ("H100", Flags(attention="xformers"), "xformers package"),
])
def test_an_explicit_request_the_device_cannot_honour_is_refused(device: str, flags: Flags, words: str) -> None:
    with pytest.raises(DeviceError, match=words):
        choose_configuration(DEVICES[device], flags)


def test_fallbacks_drop_fp8_first_then_compile() -> None:
    fastest = choose_configuration(DEVICES["H100"], Flags(fp8="auto"))
    assert fastest.label == "bfloat16+compile+fp8/sdpa"
    chain = fastest.fallbacks("refused by the quality gate")
    assert [configuration.label for configuration in chain] == ["bfloat16+compile/sdpa", "bfloat16/sdpa"]
    assert chain[0].fp8.reason == "refused by the quality gate"
    assert choose_configuration(DEVICES["CPU"], Flags()).fallbacks("x") == []


def test_the_worker_s_device_plan_carries_the_choices_and_their_reasons() -> None:
    from webui.settings import WorkerSettings
    from webui.worker.pipelines.device import Machine, plan_device

    hopper = Machine(cuda=True, gpu_name="NVIDIA H100", gpu_memory_bytes=80 * GIB, bf16=True, capability=(9, 0),
                     torchao=True, torch_version=TORCH)
    plan = plan_device(WorkerSettings(fp8="auto"), hopper)
    assert (plan.fp8, plan.compile, str(plan.dtype)) == (True, True, "torch.bfloat16")
    shown = plan.as_dict()["configuration"]
    assert shown["fp8"] == {"value": True, "reason": plan.configuration.fp8.reason}
    assert "compute capability 9.0" in shown["fp8"]["reason"]
    assert not plan_device(WorkerSettings(), hopper).fp8  # off unless asked: not yet measured on a GPU
